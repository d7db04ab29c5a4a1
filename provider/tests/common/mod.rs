//! Harness for running the real `terraform` against the provider binary built by cargo.
//!
//! Each [`Workdir`] is a temporary directory holding the template, a filesystem mirror
//! with the provider (laid out by [`provider::write_cli_config`], as the provisioner
//! worker does) and a private `HOME`. Terraform runs with a cleared environment plus
//! what the test sets, so the developer's `CODER_*` or `TF_*` variables cannot leak in.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod fake_coderd;

/// The longest one terraform command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Prints why a test is skipped where `cargo test` shows it: the print macros are
/// captured for passing tests, a direct write to stderr is not.
#[macro_export]
/// Under CI (`CI` set) a missing program or root is a failure that names
/// what is missing, not a silent pass.
macro_rules! skip_notice {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let reason = format!($($arg)*);
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!ci, "CI must run this test, but {reason}");
        let _ = writeln!(std::io::stderr(), "{reason}");
    }};
}

/// Whether `terraform` can be run; prints why a test is skipped when it cannot.
pub fn terraform_available() -> bool {
    let ok = Command::new("terraform")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_notice!("skipping: `terraform` is not installed or not on PATH");
    }
    ok
}

/// Returns a fresh [`Workdir`] for `$main_tf`, or returns `Ok(())` from the test when
/// terraform is missing.
#[macro_export]
macro_rules! workdir_or_skip {
    ($main_tf:expr) => {
        if !common::terraform_available() {
            return Ok(());
        } else {
            common::Workdir::new($main_tf)?
        }
    };
}

/// What a terraform command printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(out: Output) -> Self {
        Self {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Fails with everything terraform printed unless the command succeeded.
    pub fn ok(self) -> Result<Self> {
        if !self.success {
            bail!("terraform failed\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        }
        Ok(self)
    }
}

/// A template directory with the provider installed for it.
pub struct Workdir {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub home: PathBuf,
    cli_config: PathBuf,
    env: Vec<(String, String)>,
}

impl Workdir {
    /// A workdir whose `main.tf` is `main_tf`.
    pub fn new(main_tf: &str) -> Result<Self> {
        let w = Self::empty()?;
        std::fs::write(w.dir.join("main.tf"), main_tf)?;
        Ok(w)
    }

    /// A workdir holding a copy of the `*.tf` files of `template`.
    pub fn from_template(template: &Path) -> Result<Self> {
        let w = Self::empty()?;
        for entry in std::fs::read_dir(template).with_context(|| template.display().to_string())? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tf") {
                let name = path.file_name().context("file name")?;
                std::fs::copy(&path, w.dir.join(name))?;
            }
        }
        Ok(w)
    }

    fn empty() -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("template");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&home)?;
        let binary = Path::new(env!("CARGO_BIN_EXE_terraform-provider-coder"));
        let cli_config = provider::write_cli_config(tmp.path().join("terraform"), binary)
            .context("installing the provider")?;
        Ok(Self {
            _tmp: tmp,
            dir,
            home,
            cli_config,
            env: vec![("CODER_AGENT_URL".into(), "http://127.0.0.1:3000".into())],
        })
    }

    /// Sets an environment variable for every later terraform command.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Removes an environment variable set with [`Workdir::env`].
    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// Runs `terraform ARGS` in the workdir; fails only if it cannot run or times out.
    pub fn run(&self, args: &[&str]) -> Result<Run> {
        let mut cmd = Command::new("terraform");
        cmd.args(args)
            .current_dir(&self.dir)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin")),
            )
            .env("HOME", &self.home)
            .envs(provider::terraform_env(&self.cli_config))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawning terraform")?;
        let start = Instant::now();
        while child.try_wait()?.is_none() {
            if start.elapsed() > COMMAND_TIMEOUT {
                let _ = child.kill();
                bail!("terraform {args:?} took longer than {COMMAND_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Run::from_output(child.wait_with_output()?))
    }

    pub fn init(&self) -> Result<Run> {
        self.run(&["init", "-input=false", "-no-color"])?.ok()
    }

    pub fn apply(&self) -> Result<Run> {
        self.run(&["apply", "-auto-approve", "-input=false", "-no-color"])?.ok()
    }

    pub fn destroy(&self) -> Result<Run> {
        self.run(&["destroy", "-auto-approve", "-input=false", "-no-color"])?.ok()
    }

    /// `terraform plan -detailed-exitcode`: whether the plan has changes.
    pub fn plan_has_changes(&self) -> Result<bool> {
        let run = self.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"])?;
        // Exit code 2 means "succeeded, with changes"; 1 means an error.
        match run.code {
            Some(0) => Ok(false),
            Some(2) => Ok(true),
            _ => run.ok().map(|_| false),
        }
    }

    /// `terraform show -json [FILE]`, parsed.
    pub fn show_json(&self, plan_file: Option<&str>) -> Result<serde_json::Value> {
        let mut args = vec!["show", "-json", "-no-color"];
        args.extend(plan_file);
        let run = self.run(&args)?.ok()?;
        serde_json::from_str(&run.stdout).context("parsing terraform show -json")
    }

    /// `terraform output -json`, parsed to `{name: value}`.
    pub fn outputs(&self) -> Result<serde_json::Value> {
        let run = self.run(&["output", "-json", "-no-color"])?.ok()?;
        let raw: serde_json::Value = serde_json::from_str(&run.stdout)?;
        let map = raw
            .as_object()
            .context("outputs object")?
            .iter()
            .map(|(k, v)| (k.clone(), v["value"].clone()))
            .collect();
        Ok(serde_json::Value::Object(map))
    }
}

/// The resources of a `terraform show -json` state, or of a plan's planned values.
pub fn resources(values: &serde_json::Value) -> Vec<serde_json::Value> {
    values["root_module"]["resources"].as_array().cloned().unwrap_or_default()
}

/// The resource at `address` in `resources`.
pub fn resource<'a>(resources: &'a [serde_json::Value], address: &str) -> &'a serde_json::Value {
    resources
        .iter()
        .find(|r| r["address"] == address)
        .unwrap_or_else(|| panic!("no resource {address} in {resources:#?}"))
}

/// Fails the test if terraform's output shows that the provider crashed.
pub fn assert_no_crash(run: &Run) {
    for needle in ["panicked", "Plugin did not respond", "plugin exited", "crash"] {
        assert!(
            !run.stderr.contains(needle) && !run.stdout.contains(needle),
            "provider crashed ({needle}):\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
}
