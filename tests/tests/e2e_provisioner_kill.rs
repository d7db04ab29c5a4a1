//! Faults with traffic flowing: an external provisioner daemon (`coderd
//! provisioner start`, the only worker) is killed with `kill -9` (its whole
//! process group, terraform included) in the middle of a build, while an
//! SSH session to another workspace streams data.
//!
//! Asserts: the build fails with coderd's stale-worker error once the job
//! stops heartbeating (`--job-stale-after-seconds 5`); the next build, on a
//! fresh daemon, succeeds; the SSH session is untouched (SHA-256 equal).
//! `coordinator/tests/provisioning.rs` checks the same with in-process
//! workers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tests::{
    binary, local_workspace, require_programs, run_ok, stop_embedded_postgres, tempdir, Coderd,
    HashedSession,
};

const SLOW_TEMPLATE: &str = r#"
terraform {
  required_providers {
    coder = { source = "coder/coder" }
  }
}
data "coder_workspace" "me" {}
data "coder_parameter" "sleep" {
  name    = "sleep"
  type    = "number"
  default = "0"
  mutable = true
}
resource "coder_agent" "main" {
  os   = "linux"
  arch = "amd64"
}
resource "terraform_data" "box" {
  count = data.coder_workspace.me.start_count
  input = coder_agent.main.token
  provisioner "local-exec" {
    command = "echo building slowly; sleep ${data.coder_parameter.sleep.value}"
  }
}
"#;

/// `coderd provisioner start` in a process group of its own, logging to
/// `WORK.log`; `home` is where the `local` template puts workspaces.
fn daemon(srv: &Coderd, psk: &Path, work: &Path, home: &Path) -> Child {
    let log = std::fs::File::create(work.with_extension("log")).unwrap();
    Command::new(binary("coderd").unwrap())
        .args(["provisioner", "start", "--url", srv.url.as_str(), "--psk-file"])
        .arg(psk)
        .arg("--work-dir")
        .arg(work)
        .env("HOME", home)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// `kill -9` of the daemon and everything it started, as if its machine
/// died: its process group, and whatever runs in its work directory
/// (terraform puts its children in groups of their own).
fn kill_worker(child: &mut Child, work: &Path) {
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let in_work =
            std::fs::read_link(entry.path().join("cwd")).is_ok_and(|d| d.starts_with(work));
        if in_work {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn a_build_whose_worker_is_killed_fails_and_the_next_succeeds() {
    if !require_programs(&["terraform", "ssh"]) {
        return;
    }
    let tmp = tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("config");
    let psk = tmp.path().join("psk");
    std::fs::write(&psk, "fault-test-provisioner-key-0123456789").unwrap();
    let psk_arg = psk.to_str().unwrap();
    let srv = Coderd::spawn(
        &data,
        &[
            "--provisioner-daemons",
            "0",
            "--provisioner-psk-file",
            psk_arg,
            "--job-stale-after-seconds",
            "5",
        ],
    )
    .unwrap();
    let home = data.join("home");
    let (w1, w2) = (tmp.path().join("w1"), tmp.path().join("w2"));
    let mut first = daemon(&srv, &psk, &w1, &home);
    local_workspace(&srv, &cfg, tmp.path(), "ws").unwrap();
    let coder = |args: &[&str]| {
        let mut c = srv.coder(&cfg).unwrap();
        c.args(args);
        c
    };
    let session = HashedSession::start(srv.coder(&cfg).unwrap(), &["ws"]).unwrap();
    session.wait_progress("before the build").unwrap();

    // A slow build; the worker dies once terraform runs the slow step.
    let tpl = tmp.path().join("tpl-slow");
    std::fs::create_dir_all(&tpl).unwrap();
    std::fs::write(tpl.join("main.tf"), SLOW_TEMPLATE).unwrap();
    run_ok(&mut coder(&["templates", "push", "slow", "-d", tpl.to_str().unwrap(), "--yes"]))
        .unwrap();
    let mut create = coder(&["create", "slow", "-t", "slow", "--parameter", "sleep=300", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep reading its output to the end (a closed pipe would kill it).
    let stdout = create.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("the slow step never started");
        if line.contains("building slowly") {
            break;
        }
    }
    kill_worker(&mut first, &w1);
    let killed = Instant::now();
    session.wait_progress("after the worker was killed").unwrap();

    // The build fails once the job is stale: `coder create` says why.
    let out = create.wait_with_output().unwrap();
    let failed_after = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no heartbeat"), "{stderr}");
    eprintln!("the build failed {failed_after:?} after the worker was killed");

    // A fresh worker: the next build succeeds.
    let mut second = daemon(&srv, &psk, &w2, &home);
    let done = run_ok(&mut coder(&["start", "slow", "--parameter", "sleep=0", "--yes"])).unwrap();
    assert!(done.contains("is running"), "{done}");

    session.wait_progress("after the next build").unwrap();
    let bytes = session.finish().unwrap();
    eprintln!("{bytes} bytes through the session, SHA-256 equal");
    run_ok(&mut coder(&["delete", "slow", "--yes"])).unwrap();
    run_ok(&mut coder(&["delete", "ws", "--yes"])).unwrap();
    kill_worker(&mut second, &w2);
    srv.terminate().unwrap();
    stop_embedded_postgres(&data);
}
