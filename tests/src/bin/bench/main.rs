//! `bench`: runs the benchmark groups, each beside its baseline in the same
//! invocation, and writes `docs/benchmarks.md` with SVG plots in
//! `docs/benchmarks/`.
//!
//! ```text
//! ./scripts/bench                                            # everything (< 20 min)
//! ./scripts/bench relay quic                                 # some groups
//! cargo run --release -p tests --bin bench -- all            # no packages installed
//! cargo run -p tests --bin bench -- all --quick --out /tmp/b # smoke run
//! ```
//!
//! Group `wireguard` runs in this process too, in network namespaces (root).
//! Groups `quic` and `relay` run in this process (mesh endpoints and a relay
//! on loopback); `coord` starts its own `coderd` and opens thousands of
//! coordination WebSockets against it; `sched` starts its own `coderd` and
//! seeds a thousand workspaces due for autostop at once. Groups `ssh`, `jobs` and `agent` need a real deployment: the
//! bench first builds the workspace's binaries with the profile it was built
//! with (`--no-build` skips that), then starts `coderd` from its own target
//! directory and creates a workspace from `examples/templates/local`.

/// The allocator of the binaries it measures (`coder`, `coder-agent`,
/// `coderd`): the in-process groups run the same mesh code they do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent;
mod cli;
mod coord;
mod deployment;
mod jobs;
mod net;
mod path;
mod plot;
mod quic;
mod relay;
mod report;
mod sched;
mod ssh;
mod stats;
mod summary;
mod wireguard;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};

use report::{Report, Section};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Group {
    All,
    Quic,
    Relay,
    Path,
    Ssh,
    Cli,
    Jobs,
    Agent,
    Wireguard,
    Coord,
    Sched,
}

#[derive(Debug, Parser)]
#[command(about = "Run the benchmarks and write docs/benchmarks.md")]
struct Args {
    /// Groups to run.
    #[arg(value_enum, default_value = "all")]
    groups: Vec<Group>,
    /// Smoke mode: each group runs for a fraction of a second; figures are meaningless.
    #[arg(long)]
    quick: bool,
    /// Directory for `benchmarks.md` and `benchmarks/*.svg` (default: the repository's `docs/`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not build the binaries the deployment groups need; skip those groups if missing.
    #[arg(long)]
    no_build: bool,
}

/// What every group gets.
pub struct Ctx {
    pub quick: bool,
    plots_dir: PathBuf,
}

impl Ctx {
    /// Where plot `stem` goes (`benchmarks/STEM.svg`) and its path in the
    /// report. A PNG of the same name, from before plots were SVG, is
    /// removed, so no stale picture stays beside the new one.
    pub fn plot_file(&self, stem: &str) -> (PathBuf, String) {
        let _ = std::fs::remove_file(self.plots_dir.join(format!("{stem}.png")));
        let name = format!("{stem}.svg");
        (self.plots_dir.join(&name), format!("benchmarks/{name}"))
    }
}

/// The directory the bench binary (and the workspace's other binaries) live in.
pub fn bins_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("executable has no directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Builds every binary of the workspace with the bench's own profile and target directory.
fn build_binaries() -> anyhow::Result<()> {
    let bins = bins_dir()?;
    let target = bins.parent().context("binary directory has no parent")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--workspace", "--bins", "--manifest-path", manifest])
        .env("CARGO_TARGET_DIR", target);
    // Cargo puts profile `dev` in `debug/` and every other profile in a
    // directory of its own name.
    match bins.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    eprintln!("bench: building the workspace's binaries: {cmd:?}");
    let status = cmd.status().context("run cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let wants = |g: Group| args.groups.contains(&Group::All) || args.groups.contains(&g);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs")));
    let plots_dir = out.join("benchmarks");
    std::fs::create_dir_all(&plots_dir)
        .with_context(|| format!("create {}", plots_dir.display()))?;
    let ctx = Ctx { quick: args.quick, plots_dir };
    let mut results = Results::default();

    if wants(Group::Quic) {
        if !args.quick && !args.no_build {
            quic::build_iroh_baseline()?;
        }
        eprintln!("bench: quic");
        results.record(Group::Quic, "QUIC direct path (`bench quic`)", quic::run(&ctx).await);
    }
    if wants(Group::Relay) {
        eprintln!("bench: relay");
        results.record(Group::Relay, "Relay (`bench relay`)", relay::run(&ctx).await);
    }
    if wants(Group::Path) {
        eprintln!("bench: path");
        results.record(Group::Path, "Time to a direct path (`bench path`)", path::run(&ctx).await);
    }

    if wants(Group::Wireguard) {
        if !args.quick && !args.no_build {
            wireguard::install_boringtun_cli()?;
        }
        eprintln!("bench: wireguard");
        results.record(
            Group::Wireguard,
            "WireGuard (`bench wireguard`)",
            wireguard::run(&ctx).await,
        );
    }

    if wants(Group::Coord) {
        eprintln!("bench: coord");
        let title = "Coordinator fan-out (`bench coord`)";
        if !args.no_build {
            build_binaries()?;
        }
        if bins_dir()?.join("coderd").is_file() {
            results.record(Group::Coord, title, coord::run(&ctx).await);
        } else {
            let mut s = Section::new(title, "");
            s.notes.push("Skipped: coderd is not built (run without `--no-build`).".into());
            results.sections.push((Group::Coord, s));
        }
    }

    if wants(Group::Sched) {
        eprintln!("bench: sched");
        let title = "Scheduler lag (`bench sched`)";
        if !args.no_build && !wants(Group::Coord) {
            build_binaries()?;
        }
        if bins_dir()?.join("coderd").is_file() {
            results.record(Group::Sched, title, sched::run(&ctx).await);
        } else {
            let mut s = Section::new(title, "");
            s.notes.push("Skipped: coderd is not built (run without `--no-build`).".into());
            results.sections.push((Group::Sched, s));
        }
    }

    let needs_deployment =
        wants(Group::Ssh) || wants(Group::Cli) || wants(Group::Jobs) || wants(Group::Agent);
    let mut dep = None;
    let mut skipped_note = None;
    if needs_deployment {
        if !args.no_build && !wants(Group::Coord) && !wants(Group::Sched) {
            build_binaries()?;
        }
        let bins = bins_dir()?;
        let missing: Vec<&str> =
            deployment::BINARIES.iter().copied().filter(|b| !bins.join(b).is_file()).collect();
        if !missing.is_empty() {
            skipped_note = Some(format!(
                "Skipped: {} not built in {} (run without `--no-build`).",
                missing.join(", "),
                bins.display()
            ));
        } else if !has_command("terraform") {
            skipped_note = Some("Skipped: terraform is not installed.".to_owned());
        } else {
            eprintln!("bench: starting a deployment");
            match deployment::Deployment::start().await {
                Ok(d) => dep = Some(d),
                Err(e) => skipped_note = Some(format!("**Failed** to start the deployment: {e:#}")),
            }
        }
    }
    // The agent first, so its idle figure comes before any session touched it.
    if wants(Group::Agent) {
        eprintln!("bench: agent");
        results.record(Group::Agent, "Agent", agent::run(&ctx, dep.as_ref()).await);
    }
    for (group, title) in [
        (Group::Ssh, "SSH (`bench ssh`)"),
        (Group::Cli, "CLI throughput (`bench cli`)"),
        (Group::Jobs, "Provisioner jobs (`bench jobs`)"),
    ] {
        if !wants(group) {
            continue;
        }
        eprintln!("bench: {group:?}");
        match &dep {
            Some(d) if group == Group::Ssh => results.record(group, title, ssh::run(&ctx, d).await),
            Some(d) if group == Group::Cli => results.record(group, title, cli::run(&ctx, d).await),
            Some(d) => results.record(group, title, jobs::run(&ctx, d).await),
            None => {
                let mut s = Section::new(title, "");
                s.notes.push(skipped_note.clone().unwrap_or_default());
                if skipped_note.as_deref().is_some_and(|n| n.starts_with("**Failed**")) {
                    results.failed.push(group);
                }
                results.sections.push((group, s));
            }
        }
    }
    if let Some(d) = dep.take() {
        d.shutdown();
    }

    let Results { mut sections, failed, .. } = results;
    sections.sort_by_key(|(g, _)| *g);
    let report = Report {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        machine: report::Machine::probe(),
        command: command_line(&args),
        quick: args.quick,
        sections: sections.into_iter().map(|(g, s)| (group_name(g), s)).collect(),
        elapsed_s: started.elapsed().as_secs_f64(),
        command_s: since_script_start(),
    };
    let path = out.join("benchmarks.md");
    let previous = std::fs::read_to_string(&path).ok();
    let order: Vec<String> = Group::value_variants()
        .iter()
        .filter(|g| **g != Group::All)
        .map(|g| group_name(*g))
        .collect();
    let md = report.render(&order, previous.as_deref());
    std::fs::write(&path, md).with_context(|| format!("write {}", path.display()))?;
    eprintln!("bench: wrote {} in {:.0} s", path.display(), started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!("groups failed: {failed:?}");
    }
    Ok(())
}

/// The sections so far, and which groups failed.
struct Results {
    sections: Vec<(Group, Section)>,
    failed: Vec<Group>,
    /// When the group being run started (the previous one ended).
    mark: Instant,
}

impl Default for Results {
    fn default() -> Self {
        Self { sections: Vec::new(), failed: Vec::new(), mark: Instant::now() }
    }
}

impl Results {
    /// Records a group's section, with the time since the previous group
    /// ended (its builds included).
    fn record(&mut self, group: Group, title: &str, result: anyhow::Result<Section>) {
        let elapsed = self.mark.elapsed();
        self.mark = Instant::now();
        eprintln!("bench: {} took {:.0} s", group_name(group), elapsed.as_secs_f64());
        match result {
            Ok(mut s) => {
                s.elapsed_s = Some(elapsed.as_secs_f64());
                self.sections.push((group, s));
            }
            Err(e) => {
                eprintln!("bench: group {group:?} failed: {e:#}");
                let mut s = Section::new(title, "");
                s.notes.push(format!("**Failed**: {e:#}"));
                self.sections.push((group, s));
                self.failed.push(group);
            }
        }
    }
}

fn group_name(g: Group) -> String {
    g.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
}

/// Seconds since `scripts/bench` started (it exports `BENCH_STARTED_AT`, in
/// Unix seconds), so the report can say what the whole command took, the
/// release build before this process included.
fn since_script_start() -> Option<f64> {
    let at: f64 = std::env::var("BENCH_STARTED_AT").ok()?.trim().parse().ok()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(now.as_secs_f64() - at).filter(|s| *s >= 0.0)
}

fn command_line(args: &Args) -> String {
    let groups: Vec<String> = args
        .groups
        .iter()
        .filter_map(|g| g.to_possible_value().map(|v| v.get_name().to_owned()))
        .collect();
    let mut cmd = if std::env::var_os("BENCH_STARTED_AT").is_some() {
        format!("./scripts/bench {}", groups.join(" "))
    } else {
        format!("cargo run --release -p tests --bin bench -- {}", groups.join(" "))
    };
    if args.quick {
        cmd.push_str(" --quick");
    }
    cmd
}

fn has_command(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
