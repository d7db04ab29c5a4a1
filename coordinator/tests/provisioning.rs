//! Templates and workspace builds end to end: real Postgres, real terraform,
//! the real `terraform-provider-coder`, in-process provisioners.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use codersdk::{
    Client, CreateTemplateRequest, CreateTemplateVersionRequest, CreateUserRequest,
    CreateWorkspaceBuildRequest, CreateWorkspaceRequest, LoginWithPasswordRequest, ProvisionerJob,
    ProvisionerJobStatus, Template, Transition, WorkspaceBuildParameter,
};
use coordinator::testutil::TestServer;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// How long a silent worker keeps its job: short, so the dead-worker case
/// ends soon, yet ten heartbeats long (see `TestServer::start_provisioners`).
const STALE_AFTER: Duration = Duration::from_secs(5);

const TEMPLATE: &str = r#"
terraform {
  required_providers {
    coder = { source = "coder/coder" }
  }
}
data "coder_workspace" "me" {}
data "coder_workspace_owner" "me" {}
data "coder_parameter" "sleep" {
  name    = "sleep"
  type    = "number"
  default = "0"
  mutable = true
}
data "coder_parameter" "color" {
  name    = "color"
  type    = "string"
  default = "blue"
  option {
    name  = "Blue"
    value = "blue"
  }
  option {
    name  = "Red"
    value = "red"
  }
}
resource "coder_agent" "main" {
  os             = "linux"
  arch           = "amd64"
  startup_script = "echo hello"
}
resource "coder_app" "web" {
  agent_id = coder_agent.main.id
  slug     = "web"
  url      = "http://localhost:8080"
  icon     = "/icon/code.svg"
}
resource "coder_app" "x" {
  agent_id = coder_agent.main.id
  slug     = "x"
  url      = "http://localhost:8081"
  icon     = "javascript:alert(1)"
}
resource "terraform_data" "home" {
  input = data.coder_workspace_owner.me.name
}
resource "terraform_data" "box" {
  count = data.coder_workspace.me.start_count
  input = coder_agent.main.token
  provisioner "local-exec" {
    command = "echo building ${data.coder_workspace.me.name} color=${data.coder_parameter.color.value}; sleep ${data.coder_parameter.sleep.value}"
  }
}
"#;

async fn server() -> Option<(TestServer, Client)> {
    let mut srv = TestServer::start().await.unwrap();
    srv.start_provisioners(2, STALE_AFTER)?;
    let owner = srv.owner().await.unwrap();
    Some((srv, owner))
}

fn template_tar(main_tf: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.tf"), main_tf).unwrap();
    codersdk::archive::pack_dir(dir.path()).unwrap()
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

async fn push(client: &Client, name: &str, main_tf: &str) -> Template {
    let file = client.upload("application/x-tar", template_tar(main_tf)).await.unwrap();
    // Same bytes, same file.
    assert_eq!(client.upload("application/x-tar", template_tar(main_tf)).await.unwrap(), file);
    let v = client
        .create_template_version(&CreateTemplateVersionRequest {
            file_id: file,
            ..Default::default()
        })
        .await
        .unwrap();
    let (job, lines) = wait_job(client, &format!("/api/v2/templateversions/{}/logs", v.id)).await;
    assert_eq!(job.status, ProvisionerJobStatus::Succeeded, "{}\n{}", job.error, lines.join("\n"));
    client
        .create_template(&CreateTemplateRequest {
            name: name.into(),
            template_version_id: v.id,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn build(
    client: &Client,
    ws: Uuid,
    t: Transition,
    params: Vec<WorkspaceBuildParameter>,
) -> ProvisionerJob {
    let b = client
        .create_workspace_build(
            ws,
            &CreateWorkspaceBuildRequest {
                transition: t,
                template_version_id: None,
                rich_parameter_values: params,
            },
        )
        .await
        .unwrap();
    let (job, lines) = wait_job(client, &format!("/api/v2/workspacebuilds/{}/logs", b.id)).await;
    assert!(!lines.is_empty());
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_create_stop_start_delete_round_trip() {
    let Some((srv, owner)) = server().await else { return };
    let template = push(&owner, "dev", TEMPLATE).await;

    // The import recorded parameters, resources, agents, apps.
    let params = owner.template_version_parameters(template.active_version_id).await.unwrap();
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["color", "sleep"]);
    assert_eq!(params[0].options.len(), 2);
    let resources = owner.template_version_resources(template.active_version_id).await.unwrap();
    let box_ = resources.iter().find(|r| r.name == "box").expect("box resource");
    assert!(box_.computational && !box_.persistent, "{box_:?}");
    assert_eq!(box_.agents.len(), 1);
    assert_eq!(box_.agents[0].apps[0].slug, "web");
    let home = resources.iter().find(|r| r.name == "home").expect("home resource");
    assert!(!home.computational && home.persistent, "{home:?}");

    // A bad option value is refused before any build runs.
    let err = owner
        .create_workspace(
            "me",
            &CreateWorkspaceRequest {
                name: "ws1".into(),
                template_id: template.id,
                rich_parameter_values: vec![WorkspaceBuildParameter {
                    name: "color".into(),
                    value: "green".into(),
                }],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(reqwest::StatusCode::BAD_REQUEST));

    let ws = owner
        .create_workspace(
            "me",
            &CreateWorkspaceRequest {
                name: "ws1".into(),
                template_id: template.id,
                rich_parameter_values: vec![WorkspaceBuildParameter {
                    name: "color".into(),
                    value: "red".into(),
                }],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (job, lines) =
        wait_job(&owner, &format!("/api/v2/workspacebuilds/{}/logs", ws.latest_build.id)).await;
    assert_eq!(job.status, ProvisionerJobStatus::Succeeded, "{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains("building ws1 color=red")), "{}", lines.join("\n"));
    assert_eq!(
        owner.workspace(ws.id).await.unwrap().latest_build.status,
        codersdk::WorkspaceStatus::Running
    );

    // The agent token terraform produced is stored only as its hash.
    let state: Vec<u8> =
        sqlx::query_scalar("SELECT provisioner_state FROM workspace_builds WHERE id = $1")
            .bind(ws.latest_build.id)
            .fetch_one(&srv.db.pool)
            .await
            .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    let token =
        state["resources"].as_array().unwrap().iter().find(|r| r["type"] == "coder_agent").unwrap()
            ["instances"][0]["attributes"]["token"]
            .as_str()
            .unwrap()
            .to_owned();
    let hashes: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT a.auth_token_hash FROM workspace_agents a JOIN workspace_resources r ON r.id = a.resource_id
         JOIN workspace_builds b ON b.job_id = r.job_id WHERE b.id = $1",
    )
    .bind(ws.latest_build.id)
    .fetch_all(&srv.db.pool)
    .await
    .unwrap();
    assert_eq!(hashes, vec![Sha256::digest(token.as_bytes()).to_vec()]);

    // The agent API, authenticated by that token.
    let agent = srv.client().with_token(token.clone());
    let manifest = agent.agent_manifest().await.unwrap();
    assert_eq!(manifest.agent_name, "main");
    assert_eq!(manifest.workspace_name, "ws1");
    assert_eq!(manifest.startup_script, "echo hello");
    assert_eq!(manifest.apps[0].slug, "web");
    // App icons: a `/`-relative one is kept; another scheme is dropped when
    // the build records the apps, so no page can ever show it.
    assert_eq!(manifest.apps[0].icon, "/icon/code.svg");
    assert_eq!((manifest.apps[1].slug.as_str(), manifest.apps[1].icon.as_str()), ("x", ""));
    let http = reqwest::Client::new();
    let svg = http.get(srv.url.join("/icon/code.svg").unwrap()).send().await.unwrap();
    assert_eq!(svg.status(), 200);
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.unwrap().starts_with("<svg"));
    for missing in ["/icon/nope.svg", "/icon/..%2Fdashboard.js", "/icon/"] {
        let r = http.get(srv.url.join(missing).unwrap()).send().await.unwrap();
        assert_eq!(r.status(), 404, "{missing}");
    }
    assert!(manifest.relay_map.regions.contains_key(&coordinator::relay::EMBEDDED_REGION_ID));
    agent
        .post_lifecycle(&codersdk::PostLifecycleRequest {
            state: codersdk::LifecycleState::Ready,
            exit_code: Some(0),
        })
        .await
        .unwrap();
    agent
        .patch_agent_logs(&codersdk::PatchAgentLogsRequest {
            source: String::new(),
            log_source_id: None,
            logs: vec![codersdk::AgentLog {
                level: codersdk::LogLevel::Info,
                output: "hello".into(),
            }],
        })
        .await
        .unwrap();
    agent.post_agent_stats(&codersdk::AgentStats::default()).await.unwrap();
    let res = owner.workspace_build_resources(ws.latest_build.id).await.unwrap();
    let a = res.iter().flat_map(|r| r.agents.iter()).next().unwrap();
    assert_eq!((a.status.as_str(), a.lifecycle_state.as_str()), ("connected", "ready"));
    let logs = owner.agent_logs(a.id).await.unwrap();
    assert_eq!(logs.iter().map(|l| l.output.as_str()).collect::<Vec<_>>(), ["hello"]);
    let bad = srv.client().with_token("not-a-token").agent_manifest().await.unwrap_err();
    assert_eq!(bad.status(), Some(reqwest::StatusCode::UNAUTHORIZED));

    // Log cursor: resuming after a line yields exactly the rest.
    let path = format!("/api/v2/workspacebuilds/{}/logs", ws.latest_build.id);
    let all = owner.job_logs(&path, 0).await.unwrap();
    let mid = all[all.len() / 2].id;
    let rest = owner.job_logs(&path, mid).await.unwrap();
    assert_eq!(rest.as_slice(), &all[all.len() / 2 + 1..]);

    let job = build(&owner, ws.id, Transition::Stop, vec![]).await;
    assert_eq!(job.status, ProvisionerJobStatus::Succeeded, "{}", job.error);
    let w = owner.workspace(ws.id).await.unwrap();
    assert_eq!(w.latest_build.status, codersdk::WorkspaceStatus::Stopped);
    // A stopped workspace's agent token no longer authenticates.
    let stale = agent.agent_manifest().await.unwrap_err();
    assert_eq!(stale.status(), Some(reqwest::StatusCode::UNAUTHORIZED));
    let stopped = owner.workspace_build_resources(w.latest_build.id).await.unwrap();
    assert!(stopped.iter().all(|r| r.name != "box"), "box survived the stop: {stopped:?}");
    assert!(stopped.iter().any(|r| r.name == "home"));

    let job = build(&owner, ws.id, Transition::Start, vec![]).await;
    assert_eq!(job.status, ProvisionerJobStatus::Succeeded, "{}", job.error);
    let job = build(&owner, ws.id, Transition::Delete, vec![]).await;
    assert_eq!(job.status, ProvisionerJobStatus::Succeeded, "{}", job.error);
    assert_eq!(
        owner.workspace(ws.id).await.unwrap_err().status(),
        Some(reqwest::StatusCode::NOT_FOUND)
    );
    assert!(owner.workspaces(false).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_cannot_touch_other_users_workspaces() {
    let Some((srv, owner)) = server().await else { return };
    let template = push(&owner, "dev", TEMPLATE).await;
    let ws = owner
        .create_workspace(
            "me",
            &CreateWorkspaceRequest {
                name: "mine".into(),
                template_id: template.id,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    owner
        .create_user(&CreateUserRequest {
            email: "m@example.com".into(),
            username: "mallory".into(),
            password: "mallory-password".into(),
            roles: vec![],
        })
        .await
        .unwrap();
    let token = srv
        .client()
        .login_with_password(&LoginWithPasswordRequest {
            username: "mallory".into(),
            password: "mallory-password".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .session_token;
    let m = srv.client().with_token(token);
    let denied = m
        .create_workspace_build(
            ws.id,
            &CreateWorkspaceBuildRequest {
                transition: Transition::Delete,
                template_version_id: None,
                rich_parameter_values: vec![],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(denied.status(), Some(reqwest::StatusCode::NOT_FOUND));
    assert_eq!(
        m.workspace(ws.id).await.unwrap_err().status(),
        Some(reqwest::StatusCode::NOT_FOUND)
    );
    assert_eq!(
        m.workspace_build(ws.latest_build.id).await.unwrap_err().status(),
        Some(reqwest::StatusCode::NOT_FOUND)
    );
    assert!(m.workspaces(false).await.unwrap().is_empty());
    assert_eq!(
        m.workspaces(true).await.unwrap_err().status(),
        Some(reqwest::StatusCode::FORBIDDEN)
    );
    // Members may not push templates either.
    let err =
        m.create_template_version(&CreateTemplateVersionRequest::default()).await.unwrap_err();
    assert_eq!(err.status(), Some(reqwest::StatusCode::FORBIDDEN));
    // Members can create their own workspace from the template.
    let own = m
        .create_workspace(
            "me",
            &CreateWorkspaceRequest {
                name: "mine".into(),
                template_id: template.id,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_ne!(own.id, ws.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_running_build_and_survive_a_dead_worker() {
    let Some((mut srv, owner)) = server().await else { return };
    let template = push(&owner, "slow", TEMPLATE).await;
    let ws = owner
        .create_workspace(
            "me",
            &CreateWorkspaceRequest {
                name: "slow".into(),
                template_id: template.id,
                rich_parameter_values: vec![WorkspaceBuildParameter {
                    name: "sleep".into(),
                    value: "120".into(),
                }],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Cancel once terraform is running the slow provisioner.
    let build_id = ws.latest_build.id;
    let path = format!("/api/v2/workspacebuilds/{build_id}/logs");
    let canceler = owner.clone();
    let mut asked = false;
    let job = tokio::time::timeout(
        Duration::from_secs(90),
        owner.follow_job_logs(&path, |l| {
            if !asked && l.output.contains("building slow") {
                asked = true;
                let c = canceler.clone();
                tokio::spawn(async move { c.cancel_workspace_build(build_id).await.unwrap() });
            }
        }),
    )
    .await
    .expect("cancel did not end the build")
    .unwrap();
    assert!(asked, "the slow step never started");
    assert_eq!(job.status, ProvisionerJobStatus::Canceled, "{job:?}");

    // Now a worker dies mid-apply: the job fails after the stale timeout.
    let b = owner
        .create_workspace_build(
            ws.id,
            &CreateWorkspaceBuildRequest {
                transition: Transition::Start,
                template_version_id: None,
                rich_parameter_values: vec![],
            },
        )
        .await
        .unwrap();
    let path = format!("/api/v2/workspacebuilds/{}/logs", b.id);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let follower = owner.clone();
    let follow = tokio::spawn(async move {
        follower
            .follow_job_logs(&path, |l| {
                if l.output.contains("building slow") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            })
            .await
    });
    let started =
        tokio::time::timeout(Duration::from_secs(60), rx).await.expect("slow step never started");
    if started.is_err() {
        // The build ended before its slow step: say how.
        panic!("the build ended before its slow step: {:?}", follow.await);
    }
    srv.kill_provisioners();
    let job = tokio::time::timeout(Duration::from_secs(60), follow)
        .await
        .expect("job never failed")
        .unwrap()
        .unwrap();
    assert_eq!(job.status, ProvisionerJobStatus::Failed);
    assert_eq!(job.error_code, "worker_lost");

    // With workers back, the next build succeeds.
    srv.start_provisioners(1, STALE_AFTER).unwrap();
    let job = build(
        &owner,
        ws.id,
        Transition::Start,
        vec![WorkspaceBuildParameter { name: "sleep".into(), value: "0".into() }],
    )
    .await;
    assert_eq!(job.status, ProvisionerJobStatus::Succeeded, "{}", job.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_archives_fail_the_import_with_a_clear_error() {
    let Some((_srv, owner)) = server().await else { return };
    // An archive with a path that escapes the job directory.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let data = b"owned";
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "main.tf", &data[..]).unwrap();
    let mut raw = b.into_inner().unwrap();
    // Rewrite the name in the header to a traversal the tar crate won't write.
    let evil = b"../../escape.tf";
    raw[..100].fill(0);
    raw[..evil.len()].copy_from_slice(evil);
    let mut header = tar::Header::from_byte_slice(&raw[..512]).clone();
    header.set_cksum();
    raw[..512].copy_from_slice(header.as_bytes());
    let file = owner.upload("application/x-tar", raw).await.unwrap();
    let v = owner
        .create_template_version(&CreateTemplateVersionRequest {
            file_id: file,
            ..Default::default()
        })
        .await
        .unwrap();
    let (job, _) = wait_job(&owner, &format!("/api/v2/templateversions/{}/logs", v.id)).await;
    assert_eq!(job.status, ProvisionerJobStatus::Failed);
    assert_eq!(job.error_code, "bad_archive", "{}", job.error);

    // Oversized uploads are refused with 413; other content types with 415.
    // (The server answers before reading the whole body; under load the
    // client can see the connection reset before the answer, so it may take
    // another try to read the 413.)
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let err = owner.upload("application/x-tar", vec![0u8; 11 << 20]).await.unwrap_err();
        statuses.push(err.status());
        if err.status().is_some() {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&Some(reqwest::StatusCode::PAYLOAD_TOO_LARGE)),
        "{statuses:?}"
    );
    let err = owner.upload("text/plain", b"hi".to_vec()).await.unwrap_err();
    assert_eq!(err.status(), Some(reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE));
}
