//! Group `jobs`: provisioner job pickup latency and workspace build overhead.
//!
//! Pickup: template versions whose archive is not a tar are enqueued one at a
//! time through the API, each after the previous one finished, so a worker
//! is always idle; the job's `started_at − created_at` (both stamped by
//! Postgres) is the time from the insert to a worker's acquire. The job then
//! fails at once in extraction, which keeps terraform out of the loop.
//!
//! Build overhead: `coder create` of a `local` workspace against `terraform
//! init` + `terraform apply` run by hand in a copy of the same template
//! directory, with our provider installed from the same kind of filesystem
//! mirror the worker uses (`provider::write_cli_config`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use codersdk::CreateTemplateVersionRequest;

use crate::deployment::Deployment;
use crate::plot::{self, Bar, Series};
use crate::report::{Better, Plot, Row, Section};
use crate::stats::{median, ms, percentile};
use crate::Ctx;

pub async fn run(ctx: &Ctx, dep: &Deployment) -> anyhow::Result<Section> {
    let (jobs, builds) = if ctx.quick { (5, 1) } else { (200, 3) };
    let mut section = Section::new(
        "Provisioner jobs (`bench jobs`)",
        &format!(
            "*Pickup latency*: {jobs} template-import jobs enqueued one at a time through \
             `POST /api/v2/templateversions` (each after the previous finished, so a worker \
             is idle; coderd runs 3), latency = the job's `started_at − created_at`, both \
             stamped by Postgres: insert + `NOTIFY` → `LISTEN` wake-up → `FOR UPDATE SKIP \
             LOCKED` acquire. The archive is not a tar, so each job then fails at once. \
             *Build overhead*: `coder create` of a `local` workspace (median of {builds}; \
             the workspace is deleted after each, untimed) against `terraform init` + \
             `terraform apply` run by hand in a copy of the same template directory, with \
             our provider from a filesystem mirror (`provider::write_cli_config`), as the \
             worker does it. The server-side figure is the build job's `completed_at − \
             created_at`."
        ),
    );

    let pickup = pickup_latencies(dep, jobs).await.context("job pickup")?;
    section.rows.push(
        Row::new(
            "job pickup latency, idle worker, p50",
            percentile(&pickup, 50.0),
            "ms",
            Better::Lower,
        )
        .note(format!("{} jobs", pickup.len())),
    );
    section.rows.push(Row::new(
        "job pickup latency, idle worker, p99",
        percentile(&pickup, 99.0),
        "ms",
        Better::Lower,
    ));
    section.rows.push(Row::new(
        "job pickup latency, idle worker, max",
        percentile(&pickup, 100.0),
        "ms",
        Better::Lower,
    ));
    let mut sorted = pickup.clone();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len().max(1) as f64;
    let (file, md) = ctx.plot_file("jobs_pickup");
    plot::lines(
        &file,
        "Job pickup latency, CDF",
        ("ms", "fraction of jobs"),
        &[Series {
            name: "pickup",
            points: sorted.iter().enumerate().map(|(i, v)| (*v, (i + 1) as f64 / n)).collect(),
        }],
        &[],
    )?;
    section.plots.push(Plot {
        file: md,
        caption: "Distribution of job pickup latency (enqueue → acquired)".into(),
    });

    let b = build_overhead(dep, builds).await.context("build overhead")?;
    section.rows.push(
        Row::new(
            "workspace build, `coder create` wall time",
            median(&b.create),
            "ms",
            Better::Lower,
        )
        .baseline("terraform init + apply by hand", median(&b.by_hand)),
    );
    section.rows.push(
        Row::new("workspace build job, created → completed", median(&b.job), "ms", Better::Lower)
            .baseline("terraform init + apply by hand", median(&b.by_hand)),
    );
    section.rows.push(Row::new(
        "first `coder create` (cold)",
        ms(dep.first_create),
        "ms",
        Better::Lower,
    ));
    let (file, md) = ctx.plot_file("jobs_build");
    plot::bars(
        &file,
        "Workspace build (lower is better)",
        "ms",
        &[
            Bar { label: "coder create (wall)", value: median(&b.create), ours: true },
            Bar { label: "build job (server side)", value: median(&b.job), ours: true },
            Bar { label: "terraform init + apply by hand", value: median(&b.by_hand), ours: false },
        ],
    )?;
    section
        .plots
        .push(Plot { file: md, caption: "Workspace build time vs terraform by hand".into() });
    Ok(section)
}

/// Pickup latencies in ms of `n` import jobs enqueued one after another.
async fn pickup_latencies(dep: &Deployment, n: usize) -> anyhow::Result<Vec<f64>> {
    let file_id = dep
        .api
        .upload(
            "application/x-tar",
            b"this is not a tar archive, so the job fails at once".to_vec(),
        )
        .await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let req = CreateTemplateVersionRequest { file_id, ..Default::default() };
        let version = dep.api.create_template_version(&req).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let job = loop {
            let v = dep.api.template_version(version.id).await?;
            if v.job.status.is_done() {
                break v.job;
            }
            if Instant::now() > deadline {
                bail!("job {} not done after 30 s", v.job.id);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let started = job.started_at.context("finished job has no started_at")?;
        out.push((started - job.created_at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
    }
    Ok(out)
}

struct Builds {
    create: Vec<f64>,
    job: Vec<f64>,
    by_hand: Vec<f64>,
}

async fn build_overhead(dep: &Deployment, n: usize) -> anyhow::Result<Builds> {
    let mut b = Builds { create: Vec::new(), job: Vec::new(), by_hand: Vec::new() };
    let bins = crate::bins_dir()?;
    let mirror = dep.tmp.path().join("tf-mirror");
    let cli_config = provider::write_cli_config(&mirror, bins.join("terraform-provider-coder"))?;
    let home = dep.tmp.path().join("by-hand-home");
    for i in 0..n {
        let name = format!("bench{i}");
        let start = Instant::now();
        dep.coder_ok(&["create", &name, "-t", "local", "--yes"])?;
        b.create.push(ms(start.elapsed()));
        let ws = dep.api.workspace_by_owner_and_name("me", &name).await?;
        let job = &ws.latest_build.job;
        if let Some(done) = job.completed_at {
            b.job.push(
                (done - job.created_at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0,
            );
        }
        dep.coder_ok(&["delete", &name, "--yes"])?;

        let dir = dep.tmp.path().join(format!("by-hand-{i}"));
        copy_dir(&dep.template, &dir)?;
        let tf = |args: &[&str]| {
            let mut cmd = Command::new("terraform");
            cmd.args(args).current_dir(&dir).env("HOME", &home).env("TF_INPUT", "0");
            cmd.envs(provider::terraform_env(&cli_config));
            cmd.env(
                provider::ACCESS_URL_ENV,
                dep.srv().map(|s| s.url.to_string()).unwrap_or_default(),
            )
            .env("CODER_WORKSPACE_ID", uuid::Uuid::new_v4().to_string())
            .env("CODER_WORKSPACE_NAME", format!("hand{i}"))
            .env("CODER_WORKSPACE_TRANSITION", "start")
            .env("CODER_WORKSPACE_OWNER", "dev");
            cmd
        };
        let start = Instant::now();
        tests::run_ok(&mut tf(&["init", "-no-color", "-input=false"]))?;
        tests::run_ok(&mut tf(&["apply", "-no-color", "-input=false", "-auto-approve"]))?;
        b.by_hand.push(ms(start.elapsed()));
        let _ = tests::run_ok(&mut tf(&["destroy", "-no-color", "-input=false", "-auto-approve"]));
        tests::kill_local_agents(&home);
    }
    Ok(b)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
