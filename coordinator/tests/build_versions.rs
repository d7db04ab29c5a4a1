//! Which template version a build may use, against the real router and
//! Postgres: versions are seeded straight into the database with their
//! import job in the state each case needs (no terraform runs; builds stay
//! queued).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use codersdk::{
    Client, CreateUserRequest, CreateWorkspaceBuildRequest, CreateWorkspaceRequest,
    LoginWithPasswordRequest, SdkError, Transition,
};
use coordinator::testutil::TestServer;
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Copy)]
enum Import {
    Succeeded,
    Failed,
    Pending,
}

/// A template version of `template` (`None`: attached to no template).
async fn seed_version(db: &PgPool, owner: Uuid, template: Option<Uuid>, import: Import) -> Uuid {
    let (file, job, version) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("INSERT INTO files (id, hash, mimetype, data, created_by) VALUES ($1, $2, 'application/x-tar', '', $3)")
        .bind(file).bind(file.simple().to_string()).bind(owner).execute(db).await.unwrap();
    let (done, error) = match import {
        Import::Succeeded => ("now()", "NULL"),
        Import::Failed => ("now()", "'terraform plan failed'"),
        Import::Pending => ("NULL", "NULL"),
    };
    sqlx::query(&format!(
        "INSERT INTO provisioner_jobs (id, type, input, file_id, initiator_id, started_at, completed_at, error)
         VALUES ($1, 'template_version_import', '{{}}', $2, $3, {done}, {done}, {error})"
    ))
    .bind(job).bind(file).bind(owner).execute(db).await.unwrap();
    sqlx::query("INSERT INTO template_versions (id, template_id, name, job_id, created_by) VALUES ($1, $2, $3, $4, $5)")
        .bind(version).bind(template).bind(format!("v-{}", &version.simple().to_string()[..6])).bind(job).bind(owner)
        .execute(db).await.unwrap();
    version
}

/// A template whose active version imported; returns (template, active version).
async fn seed_template(db: &PgPool, owner: Uuid, name: &str) -> (Uuid, Uuid) {
    let template = Uuid::new_v4();
    let placeholder = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO templates (id, name, active_version_id, created_by) VALUES ($1, $2, $3, $4)",
    )
    .bind(template)
    .bind(name)
    .bind(placeholder)
    .bind(owner)
    .execute(db)
    .await
    .unwrap();
    let active = seed_version(db, owner, Some(template), Import::Succeeded).await;
    sqlx::query("UPDATE templates SET active_version_id = $1 WHERE id = $2")
        .bind(active)
        .bind(template)
        .execute(db)
        .await
        .unwrap();
    (template, active)
}

/// Marks a workspace's builds finished, so the next one may start.
async fn finish_builds(db: &PgPool, workspace: Uuid) {
    sqlx::query(
        "UPDATE provisioner_jobs SET started_at = now(), completed_at = now()
         WHERE id IN (SELECT job_id FROM workspace_builds WHERE workspace_id = $1)",
    )
    .bind(workspace)
    .execute(db)
    .await
    .unwrap();
}

async fn member(srv: &TestServer, owner: &Client) -> Client {
    owner
        .create_user(&CreateUserRequest {
            email: "member@example.com".into(),
            username: "member".into(),
            password: "member-password".into(),
            roles: vec![],
        })
        .await
        .unwrap();
    let t = srv
        .client()
        .login_with_password(&LoginWithPasswordRequest {
            username: "member".into(),
            password: "member-password".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    srv.client().with_token(t.session_token)
}

fn create(name: &str, template: Uuid, version: Option<Uuid>) -> CreateWorkspaceRequest {
    CreateWorkspaceRequest {
        name: name.into(),
        template_id: template,
        template_version_id: version,
        rich_parameter_values: vec![],
    }
}

fn start(version: Option<Uuid>) -> CreateWorkspaceBuildRequest {
    CreateWorkspaceBuildRequest {
        transition: Transition::Start,
        template_version_id: version,
        rich_parameter_values: vec![],
    }
}

fn status(e: SdkError) -> (StatusCode, String) {
    (e.status().unwrap(), e.to_string())
}

struct Fixture {
    srv: TestServer,
    owner: Client,
    member: Client,
    template: Uuid,
    active: Uuid,
    draft: Uuid,
    failed: Uuid,
    pending: Uuid,
    orphan: Uuid,
    other_active: Uuid,
}

async fn fixture() -> Fixture {
    let srv = TestServer::start().await.unwrap();
    let owner = srv.owner().await.unwrap();
    let member = member(&srv, &owner).await;
    let owner_id = owner.me().await.unwrap().id;
    let db = &srv.db.pool;
    let (template, active) = seed_template(db, owner_id, "base").await;
    let draft = seed_version(db, owner_id, Some(template), Import::Succeeded).await;
    let failed = seed_version(db, owner_id, Some(template), Import::Failed).await;
    let pending = seed_version(db, owner_id, Some(template), Import::Pending).await;
    let orphan = seed_version(db, owner_id, None, Import::Succeeded).await;
    let (_, other_active) = seed_template(db, owner_id, "other").await;
    Fixture { srv, owner, member, template, active, draft, failed, pending, orphan, other_active }
}

#[tokio::test]
async fn a_new_workspace_builds_only_a_usable_version_of_its_template() {
    let f = fixture().await;
    let refused = [
        (
            "other template's version",
            f.other_active,
            StatusCode::BAD_REQUEST,
            "is not a version of template",
        ),
        (
            "version of no template",
            f.orphan,
            StatusCode::BAD_REQUEST,
            "is not a version of template",
        ),
        ("unknown version", Uuid::new_v4(), StatusCode::BAD_REQUEST, "No such template version"),
        ("failed import", f.failed, StatusCode::BAD_REQUEST, "its import is failed"),
        ("pending import", f.pending, StatusCode::BAD_REQUEST, "its import is pending"),
        ("unpromoted draft", f.draft, StatusCode::FORBIDDEN, "Only template admins"),
    ];
    for (case, version, want, says) in refused {
        let err = f.member.create_workspace("me", &create("ws", f.template, Some(version))).await;
        let (got, msg) = status(err.expect_err(case));
        assert_eq!(got, want, "{case}: {msg}");
        assert!(msg.contains(says), "{case}: {msg}");
    }
    // Owners may build a draft, but no better than members a broken or foreign version.
    for (case, version) in [("other template", f.other_active), ("failed", f.failed)] {
        let err = f.owner.create_workspace("me", &create("ws", f.template, Some(version))).await;
        assert_eq!(status(err.expect_err(case)).0, StatusCode::BAD_REQUEST, "owner, {case}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM workspaces")
        .fetch_one(&f.srv.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "a refused request leaves nothing behind");

    let ws = f.member.create_workspace("me", &create("implicit", f.template, None)).await.unwrap();
    assert_eq!(ws.latest_build.template_version_id, f.active);
    let ws = f
        .member
        .create_workspace("me", &create("explicit", f.template, Some(f.active)))
        .await
        .unwrap();
    assert_eq!(ws.latest_build.template_version_id, f.active);
    let ws =
        f.owner.create_workspace("me", &create("draft", f.template, Some(f.draft))).await.unwrap();
    assert_eq!(ws.latest_build.template_version_id, f.draft);
}

#[tokio::test]
async fn a_new_build_cannot_switch_to_another_templates_or_an_unusable_version() {
    let f = fixture().await;
    let db = &f.srv.db.pool;
    let ws = f.member.create_workspace("me", &create("ws", f.template, None)).await.unwrap();
    finish_builds(db, ws.id).await;
    let refused = [
        ("other template's version", f.other_active, StatusCode::BAD_REQUEST),
        ("version of no template", f.orphan, StatusCode::BAD_REQUEST),
        ("unknown version", Uuid::new_v4(), StatusCode::BAD_REQUEST),
        ("failed import", f.failed, StatusCode::BAD_REQUEST),
        ("pending import", f.pending, StatusCode::BAD_REQUEST),
        ("unpromoted draft", f.draft, StatusCode::FORBIDDEN),
    ];
    for (case, version, want) in refused {
        let err = f.member.create_workspace_build(ws.id, &start(Some(version))).await;
        let (got, msg) = status(err.expect_err(case));
        assert_eq!(got, want, "{case}: {msg}");
    }
    let builds: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workspace_builds").fetch_one(db).await.unwrap();
    assert_eq!(builds, 1, "no refused build was queued");

    // The active version, named or implied, builds.
    let b = f.member.create_workspace_build(ws.id, &start(Some(f.active))).await.unwrap();
    assert_eq!(b.template_version_id, f.active);
    finish_builds(db, ws.id).await;
    // An owner may move the member's workspace to the draft ...
    let b = f.owner.create_workspace_build(ws.id, &start(Some(f.draft))).await.unwrap();
    assert_eq!(b.template_version_id, f.draft);
    finish_builds(db, ws.id).await;
    // ... and the member may then keep building the version it runs, named or not,
    let b = f.member.create_workspace_build(ws.id, &start(Some(f.draft))).await.unwrap();
    assert_eq!(b.template_version_id, f.draft);
    finish_builds(db, ws.id).await;
    let stop = CreateWorkspaceBuildRequest { transition: Transition::Stop, ..start(None) };
    let b = f.member.create_workspace_build(ws.id, &stop).await.unwrap();
    assert_eq!(b.template_version_id, f.draft);
    finish_builds(db, ws.id).await;
    // ... or return to the active one.
    let b = f.member.create_workspace_build(ws.id, &start(Some(f.active))).await.unwrap();
    assert_eq!(b.template_version_id, f.active);
}
