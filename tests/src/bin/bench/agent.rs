//! Group `agent`: the idle footprint of `coder-agent` (VmRSS from
//! `/proc/<pid>/status` once it has been idle a while) beside an idle OpenSSH
//! `sshd` listener, and the sizes of the binaries we ship.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::deployment::{Deployment, BINARIES, WORKSPACE};
use crate::plot::{self, Bar};
use crate::report::{Better, Plot, Row, Section};
use crate::ssh::Sshd;
use crate::Ctx;

pub async fn run(ctx: &Ctx, dep: Option<&Deployment>) -> anyhow::Result<Section> {
    let idle = if ctx.quick { Duration::from_millis(500) } else { Duration::from_secs(30) };
    let bins = crate::bins_dir()?;
    let profile = bins.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut section = Section::new(
        "Agent footprint and binary sizes (`bench agent`)",
        &format!(
            "*Idle RSS*: VmRSS of the `coder-agent` process of workspace `{WORKSPACE}` \
             (the `local` template: a process on this machine, connected to the \
             coordinator and relay, startup script done) after {} s without sessions, \
             and the CPU time it used in those seconds (utime + stime from \
             `/proc/<pid>/stat`, as a share of one core); \
             baseline: VmRSS of an idle OpenSSH `sshd` listener (which forks per session, \
             so its idle figure is the floor of a single-purpose daemon). *Sizes*: the \
             `{profile}` binaries as cargo built them (the release profile strips symbols; \
             no cross-crate LTO).",
            idle.as_secs_f64()
        ),
    );
    match dep {
        Some(dep) => {
            let pid = agent_process(dep).await.context("find the agent")?;
            let cpu_before = cpu_seconds(pid)?;
            tokio::time::sleep(idle).await;
            let cpu = (cpu_seconds(pid)? - cpu_before) / idle.as_secs_f64() * 100.0;
            section.rows.push(
                Row::new("coder-agent idle CPU", cpu, "% of a core", Better::Lower)
                    .note(format!("over {} s", idle.as_secs_f64())),
            );
            let rss = vm_rss_mib(pid).context("agent RSS")?;
            let mut row = Row::new("coder-agent idle RSS", rss, "MiB", Better::Lower);
            match Sshd::start(std::path::Path::new("/bin/sh")) {
                Ok(sshd) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    row = row.baseline("idle OpenSSH sshd", vm_rss_mib(sshd.pid())?);
                }
                Err(e) => section.notes.push(format!("sshd baseline skipped: {e:#}")),
            }
            section.rows.push(row);
        }
        None => section.notes.push("Idle RSS skipped: no deployment (binaries not built).".into()),
    }
    let mut bars = Vec::new();
    for name in BINARIES {
        let path = bins.join(name);
        match std::fs::metadata(&path) {
            Ok(m) => {
                let mib = m.len() as f64 / (1024.0 * 1024.0);
                section.rows.push(Row::new(
                    format!("`{name}` size ({profile})"),
                    mib,
                    "MiB",
                    Better::Lower,
                ));
                bars.push((name, mib));
            }
            Err(_) => section.notes.push(format!("{} is not built.", path.display())),
        }
    }
    if !bars.is_empty() {
        let (file, md) = ctx.plot_file("binary_sizes");
        let bars: Vec<Bar<'_>> =
            bars.iter().map(|(n, v)| Bar { label: n, value: *v, ours: true }).collect();
        plot::bars(&file, &format!("Binary sizes ({profile})"), "MiB", &bars)?;
        section.plots.push(Plot { file: md, caption: "Sizes of the shipped binaries".into() });
    }
    Ok(section)
}

/// The `coder-agent` in the process group the `local` template recorded.
async fn agent_process(dep: &Deployment) -> anyhow::Result<u32> {
    let ws = dep.api.workspace_by_owner_and_name("me", WORKSPACE).await?;
    let pid_file = dep.workspace_dir(ws.id).join(".coder-agent/agent.pid");
    let text = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("read {}", pid_file.display()))?;
    let pgid: u32 = text.trim().parse().context("agent.pid holds no pid")?;
    agent_pid(pgid)?.context("no coder-agent process in the workspace's process group")
}

/// User plus system CPU time `pid` has used, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds (user + system) in a `stat` file of `/proc` (a process's or
/// one thread's, `/proc/<pid>/task/<tid>/stat`).
pub fn stat_cpu_seconds(path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(path)?;
    // After `pid (comm)`: state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("odd /proc/<pid>/stat")?;
    let field = |n: usize| -> anyhow::Result<f64> {
        let v = rest.split_whitespace().nth(n - 3).context("short /proc/<pid>/stat")?;
        Ok(v.parse::<f64>()?)
    };
    let ticks_per_second =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    Ok((field(14)? + field(15)?) / ticks_per_second)
}

/// The `coder-agent` process in process group `pgid`.
fn agent_pid(pgid: u32) -> anyhow::Result<Option<u32>> {
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid pgrp …`: comm may hold spaces, so split at the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or_default();
        let pgrp = rest.split_whitespace().nth(2).and_then(|s| s.parse::<u32>().ok());
        if comm == "coder-agent" && pgrp == Some(pgid) {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

/// VmRSS of `pid` in MiB.
pub fn vm_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kib / 1024.0)
}
