//! The example templates under `examples/templates/`, applied for real.
//!
//! `local` starts a detached agent process; its access URL here is a closed port on
//! loopback, so the init script keeps failing to download the agent and retrying,
//! which is exactly what must not block `terraform apply`. Stop and delete must kill
//! the whole process group. (`netns` needs root and is not run here.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

fn template_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/templates").join(name)
}

/// The process group led by `raw`; `None` for 0 and 1 (our own group, init), which a
/// bad pid file must never make the test signal.
fn pgid(raw: u32) -> Option<Pid> {
    i32::try_from(raw).ok().filter(|&pid| pid > 1).map(Pid::from_raw)
}

/// Whether the process group `raw` still has members.
fn group_alive(raw: u32) -> bool {
    pgid(raw).is_some_and(|g| killpg(g, None).is_ok())
}

/// Kills the agent's process group if the test ends before terraform did.
struct KillGroupOnDrop(u32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(g) = pgid(self.0) {
            let _ = killpg(g, Signal::SIGKILL);
        }
    }
}

fn read_pid(path: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    text.trim().parse().context("pid file content")
}

#[test]
fn local_template_starts_and_stops_a_detached_agent() -> Result<()> {
    if !common::terraform_available() {
        return Ok(());
    }
    let workspace_id = "0b7c9e52-5d0a-4c36-9a43-6f1e2d3c4b5a";
    let mut w = common::Workdir::from_template(&template_dir("local"))?;
    w.env("CODER_AGENT_URL", "http://127.0.0.1:1")
        .env("CODER_WORKSPACE_ID", workspace_id)
        .env("CODER_WORKSPACE_NAME", "dev")
        .env("CODER_WORKSPACE_OWNER", "alice")
        .env("CODER_WORKSPACE_TRANSITION", "start");
    w.init()?;

    let started = Instant::now();
    w.apply()?;
    assert!(started.elapsed() < Duration::from_secs(30), "apply must not wait for the agent");
    // The template's default root is ~/coder-workspaces; the harness's HOME is private.
    let dir = w.home.join("coder-workspaces").join(workspace_id);
    let pid_file = dir.join(".coder-agent/agent.pid");
    let pid = read_pid(&pid_file)?;
    let _guard = KillGroupOnDrop(pid);
    assert!(group_alive(pid), "agent process group {pid} is not running");
    assert!(dir.join(".coder-agent/init.sh").is_file());

    // The init script is trying (and failing) to download the agent from the URL.
    let log = dir.join(".coder-agent/agent.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("http://127.0.0.1:1/bin/coder-agent-linux-amd64") {
            break;
        }
        assert!(Instant::now() < deadline, "no download attempt logged: {text:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let state = w.show_json(None)?;
    let all = common::resources(&state["values"]);
    assert_eq!(all.iter().filter(|r| r["type"] == "coder_agent").count(), 1);
    assert_eq!(all.iter().filter(|r| r["type"] == "coder_app").count(), 1);
    let param = common::resource(&all, "data.coder_parameter.http_port");
    assert_eq!(param["values"]["value"], "8000");

    // Stop: the agent goes, the directory stays.
    w.env("CODER_WORKSPACE_TRANSITION", "stop");
    w.apply()?;
    assert!(!group_alive(pid), "stop left the agent running");
    assert!(!pid_file.exists());
    assert!(dir.is_dir());

    // Start again, then delete: agent and directory go.
    w.env("CODER_WORKSPACE_TRANSITION", "start");
    w.apply()?;
    let pid = read_pid(&pid_file)?;
    let _guard2 = KillGroupOnDrop(pid);
    assert!(group_alive(pid));
    w.env("CODER_WORKSPACE_TRANSITION", "delete");
    w.destroy()?;
    assert!(!group_alive(pid), "delete left the agent running");
    assert!(!dir.exists(), "delete left the workspace directory");
    Ok(())
}

#[test]
fn netns_template_is_valid() -> Result<()> {
    // Applying it needs root and iptables; validating it needs neither.
    if !common::terraform_available() {
        return Ok(());
    }
    let w = common::Workdir::from_template(&template_dir("netns"))?;
    w.init()?;
    w.run(&["validate", "-no-color"])?.ok()?;
    w.run(&["plan", "-input=false", "-no-color"])?.ok()?;
    Ok(())
}
