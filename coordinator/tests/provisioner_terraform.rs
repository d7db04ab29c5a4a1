//! The provisioner core against the real `terraform` and the real
//! `terraform-provider-coder`, offline. Skipped (with the reason printed) when terraform
//! is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use codersdk::archive::pack_dir;
use coordinator::provisioner::terraform::{
    extract, ApplyError, ApplyResult, ExtractError, ExtractLimits, Session, Terraform,
    TerraformError,
};
use coordinator::provisioner::{BuildEnv, JobLog, LogLevel, Transition};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Harness

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `target/<profile>/`, from this test executable's path (`target/<profile>/deps/…`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

/// The provider binary next to this test's target dir, built on first use.
fn provider_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = profile_dir().join("terraform-provider-coder");
        if !bin.is_file() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args(["build", "-p", "provider", "--bin", "terraform-provider-coder"])
                .status()
                .expect("running cargo build for the provider");
            assert!(status.success(), "building terraform-provider-coder failed");
        }
        assert!(bin.is_file(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

struct Harness {
    tf: Terraform,
    _dir: tempfile::TempDir,
}

fn harness() -> Option<Harness> {
    let Some(terraform) = which("terraform") else {
        coordinator::testutil::skip("terraform is not installed");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let tf = Terraform::new(terraform, provider_binary(), dir.path().join("jobs"))
        .with_cancel_grace(Duration::from_secs(3));
    Some(Harness { tf, _dir: dir })
}

fn build_env() -> BuildEnv {
    let mut env = BuildEnv::default();
    env.access_url = "http://coder.test:7080".into();
    env.workspace_id = Uuid::new_v4();
    env.workspace_name = "ws".into();
    env.owner_name = "alice".into();
    env.owner_email = "alice@example.com".into();
    env.template_name = "tpl".into();
    env.parameters = vec![("size".into(), "4".into())];
    env
}

/// A session with `main_tf` extracted (through the archive path the job queue uses).
fn session(h: &Harness, main_tf: &str) -> Session {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("main.tf"), main_tf).unwrap();
    // As left by the author's own `terraform init` with another provider build: the
    // worker must drop this entry or init fails on the checksum.
    std::fs::write(src.path().join(".terraform.lock.hcl"), STALE_LOCK).unwrap();
    let archive = pack_dir(src.path()).unwrap();
    let s = h.tf.session(Uuid::new_v4(), build_env()).unwrap();
    s.extract(&archive, &ExtractLimits::default()).unwrap();
    s
}

/// A log channel whose lines are collected until the sender is dropped.
fn logs() -> (mpsc::Sender<JobLog>, tokio::task::JoinHandle<Vec<JobLog>>) {
    let (tx, mut rx) = mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    });
    (tx, collector)
}

const STALE_LOCK: &str = r#"
provider "registry.terraform.io/coder/coder" {
  version     = "2.0.0"
  constraints = ">= 2.0.0"
  hashes = [
    "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
  ]
}
"#;

const PROVIDER: &str = r#"
terraform {
  required_providers {
    coder = { source = "coder/coder" }
  }
}
"#;

/// Two agents, one app, two parameters; `home` survives stop, the agents' resources
/// exist only while started.
const TWO_AGENTS: &str = r#"
data "coder_workspace" "me" {}

data "coder_parameter" "region" {
  name         = "region"
  display_name = "Region"
  description  = "Where to run."
  default      = "eu"
  mutable      = true
  order        = 1
  option {
    name  = "Europe"
    value = "eu"
  }
  option {
    name  = "America"
    value = "us"
  }
}

data "coder_parameter" "size" {
  name  = "size"
  type  = "number"
  order = 2
  validation {
    min = 1
    max = 8
  }
}

resource "coder_agent" "dev" {
  os             = "linux"
  arch           = "amd64"
  dir            = "/home/dev"
  env            = { EDITOR = "vim" }
  startup_script = "echo hi"
  metadata {
    key          = "load"
    display_name = "Load"
    script       = "cat /proc/loadavg"
    interval     = 10
    timeout      = 1
  }
}

resource "coder_agent" "db" {
  os   = "linux"
  arch = "arm64"
}

resource "coder_app" "web" {
  agent_id     = coder_agent.dev.id
  slug         = "web"
  display_name = "Web"
  url          = "http://localhost:8080"
  share        = "authenticated"
  subdomain    = true
  healthcheck {
    url       = "http://localhost:8080/healthz"
    interval  = 5
    threshold = 3
  }
}

resource "terraform_data" "home" {
  input = "home of ${data.coder_workspace.me.name}"
}

resource "terraform_data" "dev" {
  count      = data.coder_workspace.me.start_count
  depends_on = [terraform_data.home]
  input      = coder_agent.dev.init_script
}

# Tied to its agent only through a local: the expressions' references miss that,
# `terraform graph` does not.
locals {
  db_agent = coder_agent.db.id
}

resource "terraform_data" "db" {
  count            = data.coder_workspace.me.start_count
  triggers_replace = [local.db_agent]
}

resource "coder_metadata" "home" {
  resource_id = terraform_data.home.id
  daily_cost  = 3
  item {
    key   = "size"
    value = data.coder_parameter.size.value
  }
  item {
    key       = "secret"
    value     = "s3cr3t"
    sensitive = true
  }
}
"#;

fn template(body: &str) -> String {
    format!("{PROVIDER}\n{body}")
}

// ---------------------------------------------------------------------------------------
// Extraction

/// A raw tar entry, built by hand so that invalid paths and types can be written.
fn raw_entry(out: &mut Vec<u8>, path: &str, kind: u8, link: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn archive(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, link, data) in entries {
        raw_entry(&mut out, path, *kind, link, data);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn extraction_rejects_escapes_and_writes_nothing_outside() {
    let limits = ExtractLimits::new(100, 150, 5);
    type Case = (&'static str, Vec<u8>, fn(&ExtractError) -> bool);
    let cases: Vec<Case> = vec![
        ("traversal", archive(&[("ok.tf", b'0', "", b"x"), ("../evil", b'0', "", b"x")]), |e| {
            matches!(e, ExtractError::ParentComponent { .. })
        }),
        ("nested traversal", archive(&[("a/../../evil", b'0', "", b"x")]), |e| {
            matches!(e, ExtractError::ParentComponent { .. })
        }),
        ("absolute", archive(&[("/tmp/evil", b'0', "", b"x")]), |e| {
            matches!(e, ExtractError::AbsolutePath { .. })
        }),
        (
            "symlink out",
            archive(&[("link", b'2', "../../etc", b""), ("link/passwd", b'0', "", b"x")]),
            |e| matches!(e, ExtractError::LinkEscapes { .. }),
        ),
        ("absolute symlink", archive(&[("link", b'2', "/etc/passwd", b"")]), |e| {
            matches!(e, ExtractError::LinkEscapes { .. })
        }),
        ("hardlink out", archive(&[("h", b'1', "../evil", b"")]), |e| {
            matches!(e, ExtractError::LinkEscapes { .. })
        }),
        ("hardlink to nothing", archive(&[("h", b'1', "etc/passwd", b"")]), |e| {
            matches!(e, ExtractError::DanglingHardLink { .. })
        }),
        ("char device", archive(&[("tty", b'3', "", b"")]), |e| {
            matches!(e, ExtractError::UnsupportedEntry { .. })
        }),
        ("fifo", archive(&[("pipe", b'6', "", b"")]), |e| {
            matches!(e, ExtractError::UnsupportedEntry { .. })
        }),
        ("big file", archive(&[("big", b'0', "", &[b'x'; 101])]), |e| {
            matches!(e, ExtractError::FileTooLarge { size: 101, .. })
        }),
        (
            "big total",
            archive(&[("a", b'0', "", &[b'x'; 80]), ("b", b'0', "", &[b'x'; 80])]),
            |e| matches!(e, ExtractError::TotalTooLarge { .. }),
        ),
        ("too many entries", archive(&[("1", b'5', "", &b""[..]); 6]), |e| {
            matches!(e, ExtractError::TooManyEntries { limit: 5 })
        }),
    ];
    for (name, bytes, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let sibling = tmp.path().join("sibling");
        std::fs::create_dir(&sibling).unwrap();
        let err = extract(&bytes, &dest.join("template"), &limits).unwrap_err();
        assert!(expected(&err), "{name}: unexpected {err:?}");
        assert!(!err.to_string().is_empty());
        let outside: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(outside.iter().all(|n| n == "dest" || n == "sibling"), "{name}: {outside:?}");
        assert_eq!(std::fs::read_dir(&sibling).unwrap().count(), 0, "{name}");
        // Checked before anything is written: the destination was never created.
        assert!(!dest.exists(), "{name}: wrote into dest");
    }
}

#[test]
fn extraction_accepts_links_that_stay_inside() {
    let bytes = archive(&[
        ("sub/", b'5', "", b""),
        ("sub/main.tf", b'0', "", b"# hello"),
        ("up", b'2', "sub/main.tf", b""),
        ("sub/sibling", b'2', "../up", b""),
        ("hard", b'1', "sub/main.tf", b""),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let summary = extract(&bytes, tmp.path(), &ExtractLimits::default()).unwrap();
    assert_eq!((summary.files, summary.dirs, summary.links, summary.bytes), (1, 1, 3, 7));
    assert_eq!(std::fs::read_to_string(tmp.path().join("sub/sibling")).unwrap(), "# hello");
    assert_eq!(std::fs::read_to_string(tmp.path().join("hard")).unwrap(), "# hello");
}

// ---------------------------------------------------------------------------------------
// Terraform

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_finds_agents_apps_parameters_and_flags() {
    let Some(h) = harness() else { return };
    let s = session(&h, &template(TWO_AGENTS));
    let cancel = CancellationToken::new();
    let (tx, collected) = logs();
    s.init(&tx, &cancel).await.unwrap();
    let import = s.import(&tx, &cancel).await.unwrap();
    drop(tx);
    let lines = collected.await.unwrap();

    let names: Vec<(&str, bool, bool)> = import
        .resources
        .iter()
        .map(|r| (r.address.as_str(), r.computational, r.persistent))
        .collect();
    assert_eq!(
        names,
        [
            ("terraform_data.db[0]", true, false),
            ("terraform_data.dev[0]", true, false),
            ("terraform_data.home", false, true),
        ]
    );
    let db = &import.resources[0];
    assert_eq!(db.agents.len(), 1);
    assert_eq!((db.agents[0].name.as_str(), db.agents[0].arch.as_str()), ("db", "arm64"));
    assert!(db.agents[0].apps.is_empty());

    let dev = &import.resources[1];
    assert_eq!(dev.agents.len(), 1);
    let agent = &dev.agents[0];
    assert_eq!(agent.name, "dev");
    assert_eq!(agent.dir, "/home/dev");
    assert_eq!(agent.env.get("EDITOR").map(String::as_str), Some("vim"));
    assert_eq!(agent.startup_script, "echo hi");
    assert_eq!(agent.connection_timeout_seconds, 120);
    assert_eq!(agent.metadata.len(), 1);
    assert_eq!((agent.metadata[0].key.as_str(), agent.metadata[0].interval), ("load", 10));
    assert!(agent.token.is_empty(), "tokens are computed at apply time");
    assert_eq!(agent.apps.len(), 1);
    let app = &agent.apps[0];
    assert_eq!((app.slug.as_str(), app.display_name.as_str()), ("web", "Web"));
    assert_eq!(app.url, "http://localhost:8080");
    assert_eq!(app.share, "authenticated");
    assert!(app.subdomain);
    let hc = app.healthcheck.as_ref().unwrap();
    assert_eq!(
        (hc.url.as_str(), hc.interval, hc.threshold),
        ("http://localhost:8080/healthz", 5, 3)
    );

    let home = &import.resources[2];
    assert!(home.agents.is_empty());
    assert_eq!(home.daily_cost, 3);
    let items: Vec<_> =
        home.metadata.iter().map(|m| (m.key.as_str(), m.value.as_str(), m.sensitive)).collect();
    assert_eq!(items, [("size", "4", false), ("secret", "s3cr3t", true)]);

    let params: Vec<_> = import.parameters.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(params, ["region", "size"]);
    let region = &import.parameters[0];
    assert_eq!(region.default.as_deref(), Some("eu"));
    assert!(region.mutable && !region.required);
    assert_eq!(region.display_name, "Region");
    let options: Vec<_> =
        region.options.iter().map(|o| (o.name.as_str(), o.value.as_str())).collect();
    assert_eq!(options, [("Europe", "eu"), ("America", "us")]);
    let size = &import.parameters[1];
    assert!(size.required && !size.mutable);
    assert_eq!(size.type_, "number");
    let validation = size.validation.as_ref().unwrap();
    assert_eq!((validation.min, validation.max), (Some(1), Some(8)));

    // Logs: init, then the start plan, then the stop plan, line by line.
    let stages: Vec<&str> = lines.iter().map(|l| l.stage.as_str()).collect();
    let first_plan = stages.iter().position(|s| *s == "plan").unwrap();
    assert!(stages[..first_plan].iter().all(|s| *s == "init"));
    assert!(stages[first_plan..].iter().all(|s| *s == "plan"));
    assert!(lines.iter().any(|l| l.output.contains("Terraform has been successfully initialized")));
    let plans: Vec<_> = lines.iter().filter(|l| l.output.starts_with("Plan: ")).collect();
    assert_eq!(plans.len(), 2, "{plans:?}");
}

fn state_addresses(state: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(state).unwrap();
    let mut out = Vec::new();
    for r in v["resources"].as_array().into_iter().flatten() {
        for (i, _) in r["instances"].as_array().into_iter().flatten().enumerate() {
            out.push(format!(
                "{}.{}#{i}",
                r["type"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_twice_keeps_agents_then_stop_and_destroy() {
    let Some(h) = harness() else { return };
    let cancel = CancellationToken::new();
    let (tx, collected) = logs();

    let first = session(&h, &template(TWO_AGENTS));
    first.init(&tx, &cancel).await.unwrap();
    let built = first.apply(None, Transition::Start, &tx, &cancel).await.unwrap();
    drop(first);
    let agents = |r: &ApplyResult| -> Vec<(String, String, String)> {
        r.resources
            .resources
            .iter()
            .flat_map(|res| {
                res.agents.iter().map(|a| (res.address.clone(), a.id.clone(), a.token.clone()))
            })
            .collect()
    };
    let before = agents(&built);
    assert_eq!(before.len(), 2, "{:?}", built.resources);
    assert_eq!(before[0].0, "terraform_data.db[0]");
    assert_eq!(before[1].0, "terraform_data.dev[0]");
    for (_, id, token) in &before {
        assert!(Uuid::parse_str(id).is_ok(), "{id}");
        assert_eq!(token.len(), 64);
    }
    let dev = &built.resources.resources[1].agents[0];
    assert_eq!(dev.apps.len(), 1, "app tied by agent id in state");
    let home = &built.resources.resources[2];
    assert_eq!(home.metadata.len(), 2, "metadata tied by resource id in state");

    // A new job (fresh directory) on the same state: same agents, same tokens.
    let second = session(&h, &template(TWO_AGENTS));
    second.init(&tx, &cancel).await.unwrap();
    let again =
        second.apply(Some(built.state.clone()), Transition::Start, &tx, &cancel).await.unwrap();
    drop(second);
    assert_eq!(agents(&again), before);

    // Stop: the agents' resources go, home stays.
    let third = session(&h, &template(TWO_AGENTS));
    third.init(&tx, &cancel).await.unwrap();
    let stopped = third.apply(Some(again.state), Transition::Stop, &tx, &cancel).await.unwrap();
    drop(third);
    let left: Vec<_> = stopped.resources.resources.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(left, ["terraform_data.home"]);
    assert_eq!(stopped.resources.detached_agents.len(), 2);

    // Delete destroys everything.
    let fourth = session(&h, &template(TWO_AGENTS));
    fourth.init(&tx, &cancel).await.unwrap();
    let deleted =
        fourth.apply(Some(stopped.state), Transition::Delete, &tx, &cancel).await.unwrap();
    assert!(deleted.resources.resources.is_empty());
    assert!(state_addresses(&deleted.state).is_empty(), "{:?}", state_addresses(&deleted.state));
    drop(fourth);
    drop(tx);
    let lines = collected.await.unwrap();
    assert!(lines.iter().any(|l| l.stage == "destroy" && l.output.contains("Destroy complete!")));
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The files terraform keeps its state in (state, backup, lock info), by name.
fn state_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("tfstate"))
        .collect();
    out.sort();
    out
}

/// State and plans hold the agents' tokens: under the usual umask 022, the job
/// directory is 0700 and every state and plan file in it 0600, for a first build,
/// a build on a prior state, and a delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_directory_state_and_plan_are_private() {
    let Some(h) = harness() else { return };
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let cancel = CancellationToken::new();
    let (tx, _collected) = logs();
    let mut prior = None;
    for transition in [Transition::Start, Transition::Start, Transition::Delete] {
        let s = session(&h, &template(TWO_AGENTS));
        let dir = s.template_dir().to_owned();
        let root = dir.parent().unwrap().to_owned();
        assert_eq!(mode(&root), 0o700, "job directory {}", root.display());
        assert_eq!(mode(&dir), 0o700, "template directory {}", dir.display());
        s.init(&tx, &cancel).await.unwrap();
        let built = s.apply(prior.take(), transition, &tx, &cancel).await.unwrap();
        let files = state_files(&dir);
        assert!(files.iter().any(|f| f.ends_with("terraform.tfstate")), "{files:?}");
        for f in files {
            assert_eq!(mode(&f), 0o600, "{} after {transition:?}", f.display());
        }
        if transition != Transition::Delete {
            assert_eq!(mode(&dir.join("coder.tfplan")), 0o600, "plan after {transition:?}");
        }
        prior = Some(built.state);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_apply_returns_partial_state_and_ordered_logs() {
    let Some(h) = harness() else { return };
    let s = session(
        &h,
        &template(
            r#"
resource "terraform_data" "ok" {
  provisioner "local-exec" {
    command = "echo line-1; echo line-2; echo line-3"
  }
}
resource "terraform_data" "bad" {
  depends_on = [terraform_data.ok]
  provisioner "local-exec" {
    command = "echo going down >&2; exit 7"
  }
}
"#,
        ),
    );
    let cancel = CancellationToken::new();
    let (tx, collected) = logs();
    s.init(&tx, &cancel).await.unwrap();
    let ApplyError { state, error } =
        s.apply(None, Transition::Start, &tx, &cancel).await.unwrap_err();
    assert!(
        matches!(&error, TerraformError::Failed { stage: "apply", first_error: Some(_), .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("local-exec"), "{error}");
    let state = state.expect("terraform wrote a state before failing");
    let addresses = state_addresses(&state);
    assert!(addresses.contains(&"terraform_data.ok#0".to_owned()), "{addresses:?}");
    drop(tx);
    let lines = collected.await.unwrap();
    let ours: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.output.strip_prefix("terraform_data.ok (local-exec): "))
        .filter(|o| o.starts_with("line-"))
        .collect();
    assert_eq!(ours, ["line-1", "line-2", "line-3"]);
    assert!(lines.iter().any(|l| l.level == LogLevel::Error && l.output.contains("Error:")));
    let plan_at = lines.iter().position(|l| l.output.starts_with("Plan: 2 to add")).unwrap();
    let ok_at = lines.iter().position(|l| l.output.contains("line-1")).unwrap();
    assert!(plan_at < ok_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_apply_promptly() {
    let Some(h) = harness() else { return };
    let s = session(
        &h,
        &template(
            r#"
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "echo sleeping; sleep 30"
  }
}
"#,
        ),
    );
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<JobLog>(64);
    s.init(&tx, &cancel).await.unwrap();
    // Cancel as soon as the provisioner says it is sleeping.
    let watcher = {
        let cancel = cancel.clone();
        async move {
            while let Some(line) = rx.recv().await {
                if line.output.contains("(local-exec): sleeping") {
                    cancel.cancel();
                    break;
                }
            }
            Instant::now()
        }
    };
    let apply = s.apply(None, Transition::Start, &tx, &cancel);
    let (result, canceled_at) = tokio::join!(apply, watcher);
    let elapsed = canceled_at.elapsed();
    let err = result.unwrap_err();
    assert!(err.error.is_canceled(), "{err:?}");
    eprintln!("cancel took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "cancel took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_local_template_imports() {
    let Some(h) = harness() else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/templates/local");
    let archive = pack_dir(&dir).unwrap();
    // An import knows no workspace; the access URL is still needed for init scripts.
    let mut env = BuildEnv::default();
    env.access_url = "http://coder.test:7080".into();
    let s = h.tf.session(Uuid::new_v4(), env).unwrap();
    s.extract(&archive, &ExtractLimits::default()).unwrap();
    let cancel = CancellationToken::new();
    let (tx, _collected) = logs();
    s.init(&tx, &cancel).await.unwrap();
    let import = s.import(&tx, &cancel).await.unwrap();
    let flags: Vec<_> = import
        .resources
        .iter()
        .map(|r| (r.address.as_str(), r.computational, r.persistent))
        .collect();
    assert_eq!(
        flags,
        [("terraform_data.agent[0]", true, false), ("terraform_data.home", false, true)]
    );
    let agent = &import.resources[0].agents[0];
    assert_eq!(agent.name, "main");
    assert_eq!(agent.apps.len(), 1);
    assert_eq!(agent.metadata.len(), 2);
    let home = &import.resources[1];
    let keys: Vec<_> = home.metadata.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, ["directory", "owner"]);
    assert_eq!(import.parameters.len(), 1);
    assert_eq!(import.parameters[0].name, "http_port");
    assert_eq!(import.parameters[0].validation.as_ref().unwrap().min, Some(1024));
    assert!(import.detached_agents.is_empty());
}
