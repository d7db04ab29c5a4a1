//! `./scripts/run` checks what `coderd` needs at run time before it builds
//! anything: with a program missing it stops at once, with one line saying
//! what to install, and leaves the target directory untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// A PATH of symlinks to the programs the script itself uses, plus `extra`.
fn path_with(dir: &Path, extra: &[&str]) -> String {
    for name in ["bash", "dirname", "id", "ls", "cargo"].iter().chain(extra) {
        let Ok(out) = Command::new("sh").args(["-c", &format!("command -v {name}")]).output()
        else {
            continue;
        };
        let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !found.is_empty() {
            let _ = std::os::unix::fs::symlink(found, dir.join(name));
        }
    }
    dir.display().to_string()
}

/// Runs the script with only `path` and `env`; returns (exit code, stderr lines).
fn run(path: &str, env: &[(&str, &str)], target: &Path) -> (Option<i32>, Vec<String>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/run");
    let out = Command::new("/bin/bash")
        .arg(script)
        .env_clear()
        .env("PATH", path)
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("CARGO_TARGET_DIR", target)
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/run");
    let stderr = String::from_utf8_lossy(&out.stderr).lines().map(str::to_string).collect();
    (out.status.code(), stderr)
}

#[test]
fn scripts_run_stops_before_building_when_terraform_is_missing() {
    let bin = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let path = path_with(bin.path(), &["pg_ctl", "initdb"]);
    let (code, stderr) =
        run(&path, &[("CODER_PG_CONNECTION_URL", "postgres://unused")], target.path());
    assert_eq!(code, Some(1), "stderr: {stderr:?}");
    assert_eq!(stderr.len(), 1, "one line, got {stderr:?}");
    assert!(stderr[0].contains("terraform is not on PATH"), "{stderr:?}");
    assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0, "it built something");
}
