//! The agent's token and the provisioner's environment stay out of the
//! workspace, end to end: terraform starts a real `coder-agent` (the `local`
//! template) with `CODER_AGENT_TOKEN`, `TF_*` and the rest of `local-exec`'s
//! environment; neither `env` in an SSH session nor the startup script's
//! output (stored as agent logs) shows any of it, and both show the variables
//! Coder documents for workspaces.

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

#[test]
fn token_and_provisioner_environment_stay_out_of_the_workspace() {
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
    std::fs::write(&main_tf, printing).unwrap();
    run_ok(&mut coder(&["templates", "push", "env", "-d", tpl.to_str().unwrap(), "--yes"]))
        .unwrap();
    run_ok(&mut coder(&["create", "ws", "-t", "env", "--yes"])).unwrap();

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

    run_ok(&mut coder(&["delete", "ws", "--yes"])).unwrap();
    let status = srv.terminate().unwrap();
    assert!(status.success());
    stop_embedded_postgres(&data);
}
