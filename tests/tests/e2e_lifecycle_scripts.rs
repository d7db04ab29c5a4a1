//! Scripts and shutdown end to end, with real terraform, the real provider
//! and a real agent (the `local` template, plus test resources):
//!
//! - `coder_env` values reach `coder ssh WS -- env`;
//! - each `coder_script` has its own log source, named in the agent logs API;
//! - a `start_blocks_login` script makes `coder ssh --wait auto|yes` wait;
//! - a stop build runs the shutdown script to completion *before* terraform
//!   destroys anything (a destroy-time provisioner writes a later marker), and
//!   a stop script that hangs is killed at its timeout (`shutdown_timeout`)
//!   while the build still completes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tests::{login_first_user, require_programs, run_ok, stop_embedded_postgres, tempdir, Coderd};

/// What the test adds to the `local` template.
const EXTRA: &str = r#"
resource "coder_env" "test_var" {
  agent_id = coder_agent.main.id
  name     = "TEST_VAR"
  value    = "from-coder-env"
}

resource "coder_script" "first" {
  agent_id     = coder_agent.main.id
  display_name = "First"
  run_on_start = true
  script       = "echo hello from first"
}

resource "coder_script" "second" {
  agent_id     = coder_agent.main.id
  display_name = "Second"
  run_on_start = true
  script       = "echo hello from second >&2"
}

resource "coder_script" "blocker" {
  agent_id           = coder_agent.main.id
  display_name       = "Blocker"
  run_on_start       = true
  start_blocks_login = true
  script             = "sleep 4; echo blocker-done > \"${local.dir}/blocker-done\""
}

resource "coder_script" "hang" {
  agent_id     = coder_agent.main.id
  display_name = "Hang"
  run_on_stop  = true
  timeout      = 3
  script       = "date +%s%N > \"${local.dir}/hang-started\"; sleep 600 & echo $! > \"${local.dir}/hang.pid\"; wait"
}

# Destroyed by every stop: its destroy-time provisioner marks when terraform
# began destroying.
resource "terraform_data" "destroy_marker" {
  count = data.coder_workspace.me.start_count
  input = { dir = local.dir }
  provisioner "local-exec" {
    when    = destroy
    command = "date +%s%N >> \"$DIR/destroyed-at\""
    environment = {
      DIR = self.input.dir
    }
  }
}
"#;

fn nanos(path: &Path) -> u128 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// Whether `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

#[test]
fn scripts_env_and_shutdown_before_destroy() {
    if !require_programs(&["terraform", "curl"]) {
        return;
    }
    let tmp = tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("config");
    let srv = Coderd::spawn(&data, &[]).unwrap();
    let coder = |args: &[&str]| {
        let mut c = srv.coder(&cfg).unwrap();
        c.args(args);
        c
    };
    login_first_user(&srv, &cfg).unwrap();
    let token = std::fs::read_to_string(cfg.join("session")).unwrap().trim().to_owned();
    let api = |path: &str| -> serde_json::Value {
        let url = srv.url.join(path).unwrap();
        let out = run_ok(
            Command::new("curl")
                .args(["-fsS", "-H", &format!("Coder-Session-Token: {token}")])
                .arg(url.as_str()),
        )
        .unwrap();
        serde_json::from_str(&out).unwrap()
    };

    // The local template, its shutdown script made slow and observable.
    let tpl = tmp.path().join("tpl");
    run_ok(&mut coder(&["templates", "init", tpl.to_str().unwrap(), "--id", "local"])).unwrap();
    let main_tf = tpl.join("main.tf");
    let source = std::fs::read_to_string(&main_tf).unwrap();
    let slow = source.replacen(
        "shutdown_script = <<-EOT\n",
        "shutdown_script = <<-EOT\n    sleep 1\n    date +%s%N > \"${local.dir}/shutdown-done\"\n",
        1,
    );
    assert_ne!(slow, source, "the template's shutdown script changed shape");
    std::fs::write(&main_tf, format!("{slow}\n{EXTRA}")).unwrap();
    run_ok(&mut coder(&["templates", "push", "scripts", "-d", tpl.to_str().unwrap(), "--yes"]))
        .unwrap();
    run_ok(&mut coder(&["create", "ws", "-t", "scripts", "--yes"])).unwrap();

    // `--wait auto` waits for the blocking script: its file is there.
    let started = Instant::now();
    let out = run_ok(&mut coder(&[
        "ssh",
        "ws",
        "--wait",
        "auto",
        "--",
        "cat \"$PROJECT_DIR/blocker-done\"",
    ]))
    .unwrap();
    assert_eq!(out.trim(), "blocker-done", "ssh did not wait for the blocking script");
    let out = run_ok(&mut coder(&["ssh", "ws", "--wait", "yes", "--", "env"])).unwrap();
    assert!(started.elapsed() < Duration::from_secs(120));
    for expected in ["TEST_VAR=from-coder-env", "EDITOR=vi"] {
        assert!(out.lines().any(|l| l == expected), "no {expected} in the session:\n{out}");
    }
    assert!(out.lines().any(|l| l.starts_with("PROJECT_DIR=/")), "{out}");

    // Every script has its log source, and its lines are attributed to it.
    let show: serde_json::Value =
        serde_json::from_str(&run_ok(&mut coder(&["show", "ws", "--output", "json"])).unwrap())
            .unwrap();
    let workspace_id = show["workspace"]["id"].as_str().unwrap().to_owned();
    let agent = show["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["agents"].as_array().cloned().unwrap_or_default())
        .next()
        .expect("the workspace has an agent");
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    assert_eq!(agent["startup_script_behavior"], "blocking", "{agent}");
    let sources = api(&format!("api/v2/workspaceagents/{agent_id}/log-sources"));
    let names: Vec<&str> =
        sources.as_array().unwrap().iter().map(|s| s["display_name"].as_str().unwrap()).collect();
    for name in
        ["First", "Second", "Blocker", "Hang", "Dotfiles", "Startup Script", "Shutdown Script"]
    {
        assert!(names.contains(&name), "no log source {name:?}: {names:?}");
    }
    let source_id = |name: &str| {
        sources.as_array().unwrap().iter().find(|s| s["display_name"] == name).unwrap()["id"]
            .clone()
    };
    let logs = api(&format!("api/v2/workspaceagents/{agent_id}/logs"));
    for (name, line) in [("First", "hello from first"), ("Second", "hello from second")] {
        let found = logs.as_array().unwrap().iter().find(|l| l["output"] == line);
        let found = found.unwrap_or_else(|| panic!("no {line:?} in the logs: {logs}"));
        assert_eq!(found["source"], name, "{found}");
        assert_eq!(found["source_id"], source_id(name), "{found}");
    }

    // Stop: the shutdown script finishes, the hanging one is killed at its
    // timeout, and only then does terraform destroy.
    let dir = data.join("home/coder-workspaces").join(&workspace_id);
    let stop_began = Instant::now();
    run_ok(&mut coder(&["stop", "ws", "--yes"])).unwrap();
    assert!(
        stop_began.elapsed() < Duration::from_secs(60),
        "the stop took {:?}",
        stop_began.elapsed()
    );
    let shutdown_done = nanos(&dir.join("shutdown-done"));
    let hang_started = nanos(&dir.join("hang-started"));
    let destroyed = nanos(&dir.join("destroyed-at"));
    assert!(shutdown_done < destroyed, "terraform destroyed before the shutdown script ended");
    let waited = Duration::from_nanos(u64::try_from(destroyed - hang_started).unwrap());
    assert!(waited >= Duration::from_millis(2900), "destroy began {waited:?} after the hang");
    let hang_pid: i32 =
        std::fs::read_to_string(dir.join("hang.pid")).unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exited(hang_pid) {
        assert!(Instant::now() < deadline, "the hanging script {hang_pid} is still running");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The stopped build's agent says how its shutdown ended.
    let old = api(&format!("api/v2/workspaceagents/{agent_id}/logs"));
    let hang_lines: Vec<&str> = old
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["source"] == "Hang")
        .filter_map(|l| l["output"].as_str())
        .collect();
    assert!(hang_lines.iter().any(|l| l.contains("ran longer than")), "{hang_lines:?}");
    let builds = api(&format!("api/v2/workspaces/{workspace_id}/builds"));
    let start_build = builds
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["transition"] == "start")
        .expect("the start build")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resources = api(&format!("api/v2/workspacebuilds/{start_build}/resources"));
    let lifecycle = resources
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["agents"].as_array().cloned().unwrap_or_default())
        .next()
        .unwrap()["lifecycle_state"]
        .clone();
    assert_eq!(lifecycle, "shutdown_timeout");
    let stop_build = api(&format!("api/v2/workspaces/{workspace_id}"))["latest_build"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let build_logs = api(&format!("api/v2/workspacebuilds/{stop_build}/logs"));
    let text: Vec<&str> =
        build_logs.as_array().unwrap().iter().filter_map(|l| l["output"].as_str()).collect();
    assert!(text.iter().any(|l| l.contains("shut down: shutdown_timeout")), "{text:#?}");

    run_ok(&mut coder(&["delete", "ws", "--yes"])).unwrap();
    let status = srv.terminate().unwrap();
    assert!(status.success());
    stop_embedded_postgres(&data);
}
