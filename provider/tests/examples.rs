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

use common::fake_coderd::FakeCoderd;

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

/// Waits until `path` exists and returns its content.
fn wait_for_file(path: &Path, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok(text);
        }
        anyhow::ensure!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The token of `coder_agent.main` in the workdir's state.
fn agent_token(w: &common::Workdir) -> Result<String> {
    let state = w.show_json(None)?;
    let all = common::resources(&state["values"]);
    let agent = common::resource(&all, "coder_agent.main");
    Ok(agent["values"]["token"].as_str().context("token")?.to_owned())
}

#[test]
fn local_template_runs_the_downloaded_agent() -> Result<()> {
    if !common::terraform_available() {
        return Ok(());
    }
    let have = |tool: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("curl") && !have("wget") {
        skip_notice!("skipping: the init script needs curl or wget to download the agent");
        return Ok(());
    }
    let coderd = FakeCoderd::start("127.0.0.1:0")?;
    let workspace_id = "5c2a7f10-8e3b-4d4a-b0c1-2d3e4f5a6b7c";
    let mut w = common::Workdir::from_template(&template_dir("local"))?;
    w.env("CODER_AGENT_URL", &coderd.url()).env("CODER_WORKSPACE_ID", workspace_id);
    w.init()?;
    w.apply()?;
    let dir = w.home.join("coder-workspaces").join(workspace_id);
    let pid = read_pid(&dir.join(".coder-agent/agent.pid"))?;
    let _guard = KillGroupOnDrop(pid);

    // The init script downloaded the agent and exec'd it with URL and token.
    let out = wait_for_file(&dir.join("fake-agent.out"), Duration::from_secs(20))?;
    assert!(out.contains(&format!("url={}\n", coderd.url())), "{out}");
    assert!(out.contains(&format!("token={}\n", agent_token(&w)?)), "{out}");
    assert!(out.contains("auth=token\n"), "{out}");
    assert!(out.contains(&format!("pwd={}\n", dir.display())), "{out}");
    assert_eq!(coderd.requests.lock().unwrap().as_slice(), ["/bin/coder-agent-linux-amd64"]);

    w.env("CODER_WORKSPACE_TRANSITION", "delete");
    w.destroy()?;
    assert!(!group_alive(pid), "delete left the agent running");
    Ok(())
}

/// Root, `ip netns` and `iptables`, and an explicit opt-in: the test changes the host's
/// firewall and enables IP forwarding while it runs.
fn netns_prerequisites() -> bool {
    if std::env::var_os("CODER_TEST_NETNS").is_none() {
        skip_notice!("skipping: set CODER_TEST_NETNS=1 to run network-namespace tests (root, iproute2, iptables)");
        return false;
    }
    let have = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !nix::unistd::Uid::effective().is_root() {
        skip_notice!("skipping: network-namespace tests need root");
        return false;
    }
    if !have("ip", &["netns", "list"]) || !have("iptables", &["-t", "nat", "-S"]) {
        skip_notice!("skipping: network-namespace tests need `ip netns` and `iptables`");
        return false;
    }
    true
}

#[test]
fn netns_template_runs_the_agent_behind_nat() -> Result<()> {
    if !common::terraform_available() || !netns_prerequisites() {
        return Ok(());
    }
    // The agent dials the host end of its veth, so listen beyond loopback.
    let coderd = FakeCoderd::start("0.0.0.0:0")?;
    let workspace_id = "7e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c";
    let mut w = common::Workdir::from_template(&template_dir("netns"))?;
    let root = w.home.join("workspaces");
    w.env("CODER_AGENT_URL", &format!("http://127.0.0.1:{}", coderd.addr.port()))
        .env("CODER_WORKSPACE_ID", workspace_id)
        .env("TF_VAR_workspaces_root", &root.display().to_string());
    w.init()?;
    let applied = w.apply();
    let dir = root.join(workspace_id);
    let result = applied.and_then(|_| {
        // No kill guard here: the destroy below stops the agent, and must be what does.
        let pid = read_pid(&dir.join(".coder-agent/agent.pid"))?;
        let out = wait_for_file(&dir.join("fake-agent.out"), Duration::from_secs(20))?;
        // The loopback access URL was rewritten to the host end of the veth.
        assert!(out.contains("url=http://10.213."), "{out}");
        assert!(out.contains(&format!("token={}\n", agent_token(&w)?)), "{out}");
        let ns = std::process::Command::new("ip")
            .args(["netns", "identify", &pid.to_string()])
            .output()?;
        assert_eq!(String::from_utf8_lossy(&ns.stdout).trim(), "coder-7e4d3c2b");
        Ok(pid)
    });
    // Tear the namespace and firewall rules down whatever happened above.
    w.env("CODER_WORKSPACE_TRANSITION", "delete");
    let destroyed = w.destroy();
    let pid = result?;
    let _guard = KillGroupOnDrop(pid);
    destroyed?;
    assert!(!group_alive(pid), "delete left the agent running");
    let links = std::process::Command::new("ip").args(["link"]).output()?;
    assert!(!String::from_utf8_lossy(&links.stdout).contains("cw7e4d3c2b"));
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
