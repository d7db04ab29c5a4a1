//! `coder … | head`: once stdout's reader has gone, `coder` ends quietly
//! with the status of a process killed by SIGPIPE (141), not with a panic.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

/// `coder templates init` writes a template and prints two lines; it needs
/// no deployment.
fn templates_init(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coder"));
    cmd.args(["templates", "init", "--id", "local"])
        .arg(dir.join("template"))
        .env("CODER_CONFIG_DIR", dir.join("config"))
        .env_remove("CODER_URL")
        .env_remove("CODER_SESSION_TOKEN")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn a_closed_stdout_ends_quietly_with_the_sigpipe_status() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    // The reader is gone before `coder` writes: its first line fails.
    drop(reader);
    let out = templates_init(dir.path()).stdout(writer).stderr(Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "stderr: {stderr}");
    assert!(stderr.is_empty(), "nothing on stderr, got: {stderr}");
    // The work before the first write was done.
    assert!(dir.path().join("template/main.tf").exists());
}

#[test]
fn an_open_stdout_gets_the_output_and_status_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = templates_init(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Wrote the \"local\" example"), "{stdout}");
}
