//! External provisioners: a worker that reaches coderd only over the
//! provisioner daemon API (`/api/v2/provisionerdaemons`), authenticated by a
//! pre-shared key. Real Postgres; real terraform and provider for the build.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use codersdk::{
    Client, CreateTemplateRequest, CreateTemplateVersionRequest, CreateWorkspaceBuildRequest,
    CreateWorkspaceRequest, ProvisionerJob, ProvisionerJobStatus, Transition,
};
use coordinator::provisioner::LogLevel;
use coordinator::provisionerd::queue;
use coordinator::provisionerd::{
    BackendError, ExecutorConfig, ExternalConfig, ExternalProvisioner, Heartbeat, HttpBackend,
    JobBackend, JobFailure, JobInput, JobLog, JobOutput, Lease, NewJob, ProvisionerKey, Tags,
};
use coordinator::testutil::TestServer;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const KEY: &str = "test-provisioner-key-0123456789";

const TEMPLATE: &str = r#"
terraform {
  required_providers {
    coder = { source = "coder/coder" }
  }
}
data "coder_workspace" "me" {}
resource "coder_agent" "main" {
  os   = "linux"
  arch = "amd64"
}
resource "terraform_data" "box" {
  count = data.coder_workspace.me.start_count
  input = coder_agent.main.token
  provisioner "local-exec" {
    command = "echo external build of ${data.coder_workspace.me.name}"
  }
}
"#;

fn key() -> ProvisionerKey {
    ProvisionerKey::new(KEY).unwrap()
}

fn http_backend(srv: &TestServer, key: &str) -> HttpBackend {
    let mut b = HttpBackend::new(srv.url.clone(), ProvisionerKey::new(key).unwrap()).unwrap();
    b.acquire_wait = Duration::from_millis(300);
    b
}

async fn wait_job(client: &Client, logs_path: &str) -> (ProvisionerJob, Vec<String>) {
    let mut lines = Vec::new();
    let job = tokio::time::timeout(
        Duration::from_secs(120),
        client.follow_job_logs(logs_path, |l| lines.push(l.output.clone())),
    )
    .await
    .expect("job did not finish")
    .unwrap();
    (job, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_worker_runs_imports_and_builds_over_http() {
    let (Some(terraform), Some(provider)) =
        (coordinator::provisionerd::find_terraform(), coordinator::provisionerd::find_provider())
    else {
        coordinator::testutil::skip("terraform or terraform-provider-coder is missing");
        return;
    };
    let mut srv = TestServer::start_with_provisioner_key(KEY).await.unwrap();
    srv.start_stale_job_detector(Duration::from_secs(30));
    let owner = srv.owner().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut config = ExternalConfig::new(
        srv.url.clone(),
        key(),
        ExecutorConfig::new(terraform, provider, work.path().to_path_buf()),
    );
    config.name = Some("far-away".into());
    let daemon = ExternalProvisioner::start(config).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.tf"), TEMPLATE).unwrap();
    let tar = codersdk::archive::pack_dir(dir.path()).unwrap();
    let file = owner.upload("application/x-tar", tar).await.unwrap();
    let v = owner
        .create_template_version(&CreateTemplateVersionRequest {
            file_id: file,
            ..Default::default()
        })
        .await
        .unwrap();
    let (job, lines) = wait_job(&owner, &format!("/api/v2/templateversions/{}/logs", v.id)).await;
    assert_eq!(job.status, ProvisionerJobStatus::Succeeded, "{}\n{}", job.error, lines.join("\n"));
    let resources = owner.template_version_resources(v.id).await.unwrap();
    assert!(resources.iter().any(|r| r.name == "box" && r.computational), "{resources:?}");
    let template = owner
        .create_template(&CreateTemplateRequest {
            name: "ext".into(),
            template_version_id: v.id,
            ..Default::default()
        })
        .await
        .unwrap();

    let ws = owner
        .create_workspace(
            "me",
            &CreateWorkspaceRequest {
                name: "remote".into(),
                template_id: template.id,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (job, lines) =
        wait_job(&owner, &format!("/api/v2/workspacebuilds/{}/logs", ws.latest_build.id)).await;
    assert_eq!(job.status, ProvisionerJobStatus::Succeeded, "{}\n{}", job.error, lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains("external build of remote")), "{}", lines.join("\n"));

    // The job ran on the external worker, and coderd stored its state and
    // only the hash of the agent token in it.
    let (worker, state): (String, Vec<u8>) = sqlx::query_as(
        "SELECT j.worker_id, b.provisioner_state FROM workspace_builds b
         JOIN provisioner_jobs j ON j.id = b.job_id WHERE b.id = $1",
    )
    .bind(ws.latest_build.id)
    .fetch_one(&srv.db.pool)
    .await
    .unwrap();
    assert_eq!(worker, format!("external:{}", daemon.worker_id));
    assert!(daemon.worker_id.starts_with("far-away-"));
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    let token =
        state["resources"].as_array().unwrap().iter().find(|r| r["type"] == "coder_agent").unwrap()
            ["instances"][0]["attributes"]["token"]
            .as_str()
            .unwrap()
            .to_owned();
    let hash: Vec<u8> = sqlx::query_scalar(
        "SELECT a.auth_token_hash FROM workspace_agents a JOIN workspace_resources r ON r.id = a.resource_id
         JOIN workspace_builds b ON b.job_id = r.job_id WHERE b.id = $1",
    )
    .bind(ws.latest_build.id)
    .fetch_one(&srv.db.pool)
    .await
    .unwrap();
    assert_eq!(hash, Sha256::digest(token.as_bytes()).to_vec());
    assert_eq!(
        srv.client().with_token(token).agent_manifest().await.unwrap().workspace_name,
        "remote"
    );

    // Delete starts from the stored state and removes the workspace.
    let b = owner
        .create_workspace_build(
            ws.id,
            &CreateWorkspaceBuildRequest {
                transition: Transition::Delete,
                template_version_id: None,
                rich_parameter_values: vec![],
            },
        )
        .await
        .unwrap();
    let (job, lines) = wait_job(&owner, &format!("/api/v2/workspacebuilds/{}/logs", b.id)).await;
    assert_eq!(job.status, ProvisionerJobStatus::Succeeded, "{}\n{}", job.error, lines.join("\n"));
    assert_eq!(
        owner.workspace(ws.id).await.unwrap_err().status(),
        Some(reqwest::StatusCode::NOT_FOUND)
    );
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_refused() {
    let srv = TestServer::start_with_provisioner_key(KEY).await.unwrap();
    let url = srv.url.join("/api/v2/provisionerdaemons/acquire").unwrap();
    let body = serde_json::json!({"worker_id": "w", "tags": {}, "wait_ms": 0});
    let http = reqwest::Client::new();
    for key in [None, Some(""), Some("test-provisioner-key-0123456788"), Some("short")] {
        let mut req = http.post(url.clone()).json(&body);
        if let Some(k) = key {
            req = req.header("Coder-Provisioner-Key", k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED, "key {key:?}");
    }
    let ok = http.post(url).header("Coder-Provisioner-Key", KEY).json(&body).send().await.unwrap();
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    assert!(matches!(
        http_backend(&srv, "a-wrong-key-but-long-enough").check().await,
        Err(BackendError::Unauthorized)
    ));
    http_backend(&srv, KEY).check().await.unwrap();
    let err = http_backend(&srv, "a-wrong-key-but-long-enough")
        .heartbeat(&Lease { job_id: Uuid::new_v4(), worker_id: "w".into() })
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unauthorized), "{err}");

    // A coderd without a key accepts no external provisioners at all.
    let closed = TestServer::start().await.unwrap();
    let err = http_backend(&closed, KEY).check().await.unwrap_err();
    assert!(matches!(err, BackendError::Status { status: 404, .. }), "{err}");
}

/// Enqueues a template import with tags, as an API handler would.
async fn enqueue_import(srv: &TestServer, user: Uuid, tags: Tags, archive: &[u8]) -> Uuid {
    let mut tx = srv.db.pool.begin().await.unwrap();
    let file = Uuid::new_v4();
    sqlx::query("INSERT INTO files (id, hash, mimetype, data, created_by) VALUES ($1, $2, 'application/x-tar', $3, $4)")
        .bind(file)
        .bind(file.to_string())
        .bind(archive)
        .bind(user)
        .execute(&mut *tx)
        .await
        .unwrap();
    let version = Uuid::new_v4();
    let job = queue::enqueue(
        &mut tx,
        &NewJob {
            input: JobInput::TemplateVersionImport { template_version_id: version },
            file_id: file,
            initiator_id: user,
            tags,
        },
    )
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO template_versions (id, name, job_id, created_by) VALUES ($1, 'v1', $2, $3)",
    )
    .bind(version)
    .bind(job)
    .bind(user)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_jobs_go_only_to_matching_workers_and_leases_are_enforced() {
    let srv = TestServer::start_with_provisioner_key(KEY).await.unwrap();
    let user = srv.owner().await.unwrap().me().await.unwrap().id;
    let mut gpu = Tags::new();
    gpu.insert("gpu".into(), "true".into());
    let job = enqueue_import(&srv, user, gpu.clone(), b"archive bytes").await;
    let backend = http_backend(&srv, KEY);

    // Untagged and wrongly tagged workers wait and get nothing.
    assert!(backend.acquire("plain", &Tags::new()).await.unwrap().is_none());
    let mut cpu = Tags::new();
    cpu.insert("gpu".into(), "false".into());
    assert!(backend.acquire("cpu", &cpu).await.unwrap().is_none());
    // A worker whose tags include the job's gets it, with its inputs.
    let mut gpu_zone = gpu.clone();
    gpu_zone.insert("zone".into(), "eu".into());
    let got = backend.acquire("gpu-1", &gpu_zone).await.unwrap().unwrap();
    assert_eq!(got.lease, Lease { job_id: job, worker_id: "gpu-1".into() });
    assert_eq!(got.archive, b"archive bytes");
    assert_eq!(got.facts.template_version, "v1");
    assert!(backend.acquire("gpu-2", &gpu).await.unwrap().is_none());

    // Only the lease holder may act on the job.
    let thief = Lease { job_id: job, worker_id: "gpu-2".into() };
    assert_eq!(backend.heartbeat(&thief).await.unwrap(), Heartbeat::Lost);
    let log = JobLog { stage: "plan".into(), level: LogLevel::Info, output: "hi".into() };
    assert!(!backend.append_logs(&thief, std::slice::from_ref(&log)).await.unwrap());
    let output = JobOutput::Import { parameters: vec![], resources: vec![] };
    assert!(!backend.complete(&thief, &output).await.unwrap());
    // An in-process worker's id is not reachable from outside either.
    let row = srv.state.queue.job(job).await.unwrap().unwrap();
    assert_eq!(row.worker_id.as_deref(), Some("external:gpu-1"));
    assert!(!backend
        .complete(&Lease { job_id: job, worker_id: "external:gpu-1".into() }, &output)
        .await
        .unwrap());

    let lease = got.lease;
    assert_eq!(backend.heartbeat(&lease).await.unwrap(), Heartbeat::Running);
    assert!(backend.append_logs(&lease, &[log]).await.unwrap());
    // Result bodies may be far larger than ordinary API requests (state).
    let big = JobFailure { state: Some(vec![b'x'; 3 << 20]), ..JobFailure::new("no", "test") };
    let other = enqueue_import(&srv, user, Tags::new(), b"").await;
    let got2 = backend.acquire("plain", &Tags::new()).await.unwrap().unwrap();
    assert_eq!(got2.lease.job_id, other);
    assert!(backend.fail(&got2.lease, &big).await.unwrap());
    assert_eq!(
        srv.state.queue.job(other).await.unwrap().unwrap().status(),
        ProvisionerJobStatus::Failed
    );

    // A cancel request reaches the worker through its heartbeat.
    srv.state.queue.cancel(job).await.unwrap();
    assert_eq!(backend.heartbeat(&lease).await.unwrap(), Heartbeat::CancelRequested);
    assert!(backend.complete(&lease, &output).await.unwrap());
    assert!(!backend.complete(&lease, &output).await.unwrap());
    let logs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM provisioner_job_logs WHERE job_id = $1")
            .bind(job)
            .fetch_one(&srv.db.pool)
            .await
            .unwrap();
    assert_eq!(logs, 1);
}

/// An external provisioner never follows a redirect: its key travels in a
/// header of its own, which HTTP clients only strip from `Authorization`-like
/// headers, so a 3xx from the configured URL (a stale DNS name, a hostile
/// proxy) would hand the key to whoever it points at.
#[tokio::test]
async fn external_provisioner_never_follows_a_redirect() {
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = elsewhere.local_addr().unwrap();
    let redirect = format!("http://{target}/steal");
    let app = axum::Router::new()
        .fallback(move || async move { axum::response::Redirect::temporary(&redirect) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url: url::Url = format!("http://{}/", listener.local_addr().unwrap()).parse().unwrap();
    let _serve = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        axum::serve(listener, app).await
    }));
    let backend = HttpBackend::new(url, ProvisionerKey::new(KEY).unwrap()).unwrap();
    let err = backend.check().await.unwrap_err();
    assert!(matches!(err, BackendError::Status { status: 307, .. }), "{err}");
    assert!(err.to_string().contains(&format!("redirects to http://{target}/steal")), "{err}");
    let tags = Tags::new();
    let err = backend.acquire("w1", &tags).await.unwrap_err();
    assert!(matches!(err, BackendError::Status { status: 307, .. }), "{err}");
    let knocked = elsewhere.accept();
    assert!(
        matches!(&knocked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the key was sent on: {knocked:?}"
    );
}
