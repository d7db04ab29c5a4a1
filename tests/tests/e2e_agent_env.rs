//! The agent's token and the provisioner's environment stay out of the
//! workspace, end to end: terraform starts a real `coder-agent` (the `local`
//! template) with `CODER_AGENT_TOKEN`, `TF_*` and the rest of `local-exec`'s
//! environment; neither `env` in an SSH session nor the startup script's
//! output (stored as agent logs) shows any of it, and both show the variables
//! Coder documents for workspaces.
//!
//! The same deployment then runs `coder update` (issue 23): version 2 of the
//! template adds a required parameter and `coder_env`s from it and from the
//! old values; the workspace shows as outdated until `coder update` rebuilds
//! it, after which the agent's sessions see the new variables with the old
//! values kept, and changing an immutable parameter is refused (by the CLI
//! and by the API) without building anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use tests::{login_first_user, require_programs, run_ok, stop_embedded_postgres, tempdir, Coderd};

/// The agent's environment as it was started: `/proc/PID/environ` keeps the
/// initial block even after the agent removed its token from its own copy.
fn initial_environment(pid: i32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// What must not reach the workspace: the token's value, and every `TF_`
/// variable and `CODER_PARAMETER_` variable the agent was started with.
fn assert_no_leak(what: &str, output: &str, agent_env: &[(String, String)]) {
    let token = &agent_env.iter().find(|(k, _)| k == "CODER_AGENT_TOKEN").unwrap().1;
    assert!(!output.contains(token.as_str()), "{what} shows the agent token:\n{output}");
    for line in output.lines() {
        assert!(
            !line.starts_with("TF_")
                && !line.starts_with("CODER_AGENT_TOKEN=")
                && !line.starts_with("CODER_PARAMETER_")
                && !line.starts_with("CODER_WORKSPACE_TRANSITION=")
                && !line.starts_with("OLDPWD="),
            "{what} shows the provisioner's {line:?}:\n{output}"
        );
    }
    for expected in ["CODER=true", "CODER_WORKSPACE_NAME=ws", "CODER_WORKSPACE_AGENT_NAME=main"] {
        assert!(output.lines().any(|l| l == expected), "{what} lacks {expected}:\n{output}");
    }
    assert!(output.lines().any(|l| l.starts_with("GIT_AUTHOR_NAME=")), "template env:\n{output}");
    assert!(output.lines().any(|l| l.starts_with("PATH=/")), "{what} has no PATH:\n{output}");
}

/// Version 1 adds an immutable parameter to the `local` template (which has
/// a mutable one, `http_port`).
const IMMUTABLE_PARAMETER: &str = r#"
data "coder_parameter" "disk" {
  name    = "disk"
  type    = "number"
  default = "10"
  mutable = false
}
"#;

/// Version 2: a required parameter without a default, and `coder_env`s
/// from it and from version 1's values.
const VERSION_2: &str = r#"
data "coder_parameter" "flavor" {
  name    = "flavor"
  type    = "string"
  mutable = true
}

resource "coder_env" "flavor" {
  agent_id = coder_agent.main.id
  name     = "FLAVOR"
  value    = data.coder_parameter.flavor.value
}

resource "coder_env" "kept" {
  agent_id = coder_agent.main.id
  name     = "KEPT"
  value    = "${data.coder_parameter.http_port.value}-${data.coder_parameter.disk.value}"
}
"#;

/// `coder list --output json`'s entry for `ws`.
fn listed(coder: &dyn Fn(&[&str]) -> Command) -> serde_json::Value {
    let out = run_ok(&mut coder(&["list", "--output", "json"])).unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    list.into_iter().find(|w| w["name"] == "ws").expect("ws is listed")
}

/// What a refused command said; asserts that it failed.
fn refused(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn update_keeps_values_and_refuses_immutable_changes(
    coder: &dyn Fn(&[&str]) -> Command,
    url: &url::Url,
    token: &str,
    workspace_id: &str,
) {
    // Outdated: in the list's column, its JSON, and `coder show`.
    let table = run_ok(&mut coder(&["list"])).unwrap();
    let header = table.lines().next().unwrap();
    assert!(header.trim_end().ends_with("OUTDATED"), "{table}");
    let row = table.lines().find(|l| l.contains("/ws ")).unwrap();
    assert!(row.trim_end().ends_with("true"), "{table}");
    assert_eq!(listed(coder)["outdated"], true);
    let show = run_ok(&mut coder(&["show", "ws"])).unwrap();
    assert!(show.contains("outdated"), "{show}");
    let built = listed(coder)["latest_build"]["build_number"].clone();

    // Without a terminal, the new required parameter must be given.
    let said = refused(coder(&["update", "ws"]));
    assert!(said.contains("\"flavor\" is required"), "{said}");
    assert_eq!(listed(coder)["latest_build"]["build_number"], built, "a refused update built");

    // The update: stop, then start on version 2.
    let out = run_ok(&mut coder(&["update", "ws", "--parameter", "flavor=large"])).unwrap();
    assert!(out.contains("is running"), "{out}");
    let w = listed(coder);
    assert_eq!(w["outdated"], false, "{w}");
    assert_eq!(w["latest_build"]["status"], "running", "{w}");
    let printenv = |name: &str| run_ok(&mut coder(&["ssh", "ws", "--", "printenv", name])).unwrap();
    assert_eq!(printenv("FLAVOR").trim(), "large", "the new version's variable");
    assert_eq!(printenv("KEPT").trim(), "8123-20", "the old values, kept");
    let up_to_date = run_ok(&mut coder(&["update", "ws"])).unwrap();
    assert!(up_to_date.contains("up to date"), "{up_to_date}");

    // An immutable parameter cannot change: refused by the CLI before it
    // stops anything, and by the API itself; nothing is built.
    let built = listed(coder)["latest_build"]["build_number"].clone();
    let said = refused(coder(&["update", "ws", "--parameter", "disk=30"]));
    assert!(said.contains("\"disk\" is immutable"), "{said}");
    let body = r#"{"transition":"start","rich_parameter_values":[{"name":"disk","value":"30"}]}"#;
    let builds = url.join(&format!("api/v2/workspaces/{workspace_id}/builds")).unwrap();
    let answer = run_ok(
        Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "-X", "POST", "-d", body])
            .args(["-H", "Content-Type: application/json"])
            .args(["-H", &format!("Coder-Session-Token: {token}")])
            .arg(builds.as_str()),
    )
    .unwrap();
    let (json, code) = answer.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(code, "400", "{answer}");
    let message = serde_json::from_str::<serde_json::Value>(json).unwrap()["message"].clone();
    assert!(message.as_str().unwrap().contains("\"disk\" is immutable"), "{answer}");
    let w = listed(coder);
    assert_eq!(w["latest_build"]["build_number"], built, "a refused change built: {w}");
    assert_eq!(w["latest_build"]["status"], "running", "{w}");
    assert_eq!(printenv("KEPT").trim(), "8123-20");
}

#[test]
fn token_and_provisioner_environment_stay_out_of_the_workspace_and_update_moves_it() {
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

    // The local template, with a startup script that prints its environment.
    let tpl = tmp.path().join("tpl");
    run_ok(&mut coder(&["templates", "init", tpl.to_str().unwrap(), "--id", "local"])).unwrap();
    let main_tf = tpl.join("main.tf");
    let source = std::fs::read_to_string(&main_tf).unwrap();
    let printing = source.replacen("set -e", "set -e\n    env", 1);
    assert_ne!(printing, source, "the template's startup script changed shape");
    let v1 = format!("{printing}{IMMUTABLE_PARAMETER}");
    std::fs::write(&main_tf, &v1).unwrap();
    run_ok(&mut coder(&["templates", "push", "env", "-d", tpl.to_str().unwrap(), "--yes"]))
        .unwrap();
    let values = ["--parameter", "http_port=8123", "--parameter", "disk=20"];
    run_ok(coder(&["create", "ws", "-t", "env", "--yes"]).args(values)).unwrap();

    // Ready: the startup script has run.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (agent, workspace_id) = loop {
        let show: serde_json::Value =
            serde_json::from_str(&run_ok(&mut coder(&["show", "ws", "--output", "json"])).unwrap())
                .unwrap();
        let agent = show["resources"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["agents"].as_array().cloned().unwrap_or_default())
            .next()
            .expect("the workspace has an agent");
        if agent["lifecycle_state"] == "ready" {
            break (agent, show["workspace"]["id"].as_str().unwrap().to_owned());
        }
        assert!(Instant::now() < deadline, "not ready after 60 s: {agent}");
        std::thread::sleep(Duration::from_millis(200));
    };

    // What the agent was started with: the leak to look for.
    let pid_file =
        data.join("home/coder-workspaces").join(&workspace_id).join(".coder-agent/agent.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let agent_env = initial_environment(pid);
    let names: Vec<&str> = agent_env.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains(&"CODER_AGENT_TOKEN"), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("TF_")), "no TF_ variable to leak: {names:?}");

    // An SSH session.
    let session = run_ok(&mut coder(&["ssh", "ws", "--", "env"])).unwrap();
    assert_no_leak("an ssh session", &session, &agent_env);
    assert!(session.lines().any(|l| l.starts_with("SSH_CONNECTION=")), "{session}");

    // The startup script's output, stored as agent logs.
    let token = std::fs::read_to_string(cfg.join("session")).unwrap();
    let logs_url = srv
        .url
        .join(&format!("api/v2/workspaceagents/{}/logs", agent["id"].as_str().unwrap()))
        .unwrap();
    let logs = run_ok(
        Command::new("curl")
            .args(["-fsS", "-H", &format!("Coder-Session-Token: {}", token.trim())])
            .arg(logs_url.as_str()),
    )
    .unwrap();
    let logs: Vec<serde_json::Value> = serde_json::from_str(&logs).unwrap();
    let script: String =
        logs.iter().filter_map(|l| l["output"].as_str()).map(|l| format!("{l}\n")).collect();
    assert_no_leak("the startup script", &script, &agent_env);

    // Version 2: a new required parameter, and variables from it and the old values.
    std::fs::write(&main_tf, format!("{v1}{VERSION_2}")).unwrap();
    run_ok(&mut coder(&["templates", "push", "env", "-d", tpl.to_str().unwrap(), "--yes"]))
        .unwrap();
    update_keeps_values_and_refuses_immutable_changes(
        &coder,
        &srv.url,
        token.trim(),
        &workspace_id,
    );

    run_ok(&mut coder(&["delete", "ws", "--yes"])).unwrap();
    let status = srv.terminate().unwrap();
    assert!(status.success());
    stop_embedded_postgres(&data);
}
