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

/// Declares a parameter of `version` (`mutable`; `default`: `None` = required).
async fn seed_param(db: &PgPool, version: Uuid, name: &str, mutable: bool, default: Option<&str>) {
    sqlx::query(
        "INSERT INTO template_version_parameters
           (template_version_id, name, type, mutable, default_value, required, ordinal)
         VALUES ($1, $2, 'string', $3, $4, $5,
           (SELECT count(*) FROM template_version_parameters WHERE template_version_id = $1))",
    )
    .bind(version)
    .bind(name)
    .bind(mutable)
    .bind(default)
    .bind(default.is_none())
    .execute(db)
    .await
    .unwrap();
}

fn values(pairs: &[(&str, &str)]) -> Vec<codersdk::WorkspaceBuildParameter> {
    pairs
        .iter()
        .map(|(n, v)| codersdk::WorkspaceBuildParameter { name: (*n).into(), value: (*v).into() })
        .collect()
}

async fn build_count(db: &PgPool, workspace: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM workspace_builds WHERE workspace_id = $1")
        .bind(workspace)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_update_keeps_values_asks_for_new_ones_and_never_changes_an_immutable_one() {
    let f = fixture().await;
    let db = &f.srv.db.pool;
    seed_param(db, f.active, "region", true, Some("eu")).await;
    seed_param(db, f.active, "disk", false, None).await;
    let mut req = create("ws", f.template, None);
    req.rich_parameter_values = values(&[("region", "us"), ("disk", "10")]);
    let ws = f.member.create_workspace("me", &req).await.unwrap();
    assert!(!ws.outdated, "a new workspace runs the active version");
    finish_builds(db, ws.id).await;

    // Version 2 adds a required parameter and becomes active.
    for (name, mutable) in [("region", true), ("disk", false)] {
        seed_param(db, f.draft, name, mutable, Some("default")).await;
    }
    seed_param(db, f.draft, "flavor", true, None).await;
    f.owner.set_active_version(f.template, f.draft).await.unwrap();
    let listed = f.member.workspaces(false).await.unwrap();
    assert!(listed.iter().all(|w| w.outdated), "the old version is outdated now");
    assert!(f.member.workspace(ws.id).await.unwrap().outdated);

    let update = |params: &[(&str, &str)]| CreateWorkspaceBuildRequest {
        transition: Transition::Start,
        template_version_id: Some(f.draft),
        rich_parameter_values: values(params),
    };
    // Refused, and nothing is built: the new required value missing; an
    // immutable value changed (also on a stop); an unknown parameter.
    let refused: [(&str, CreateWorkspaceBuildRequest, &str); 4] = [
        ("no flavor", update(&[]), "\"flavor\" is required"),
        ("disk changed", update(&[("flavor", "big"), ("disk", "20")]), "\"disk\" is immutable"),
        (
            "disk changed on a stop",
            CreateWorkspaceBuildRequest {
                transition: Transition::Stop,
                template_version_id: None,
                rich_parameter_values: values(&[("disk", "20")]),
            },
            "\"disk\" is immutable",
        ),
        ("unknown", update(&[("flavor", "big"), ("colour", "red")]), "no parameter \"colour\""),
    ];
    for (case, req, says) in refused {
        let (got, msg) =
            status(f.member.create_workspace_build(ws.id, &req).await.expect_err(case));
        assert_eq!(got, StatusCode::BAD_REQUEST, "{case}: {msg}");
        assert!(msg.contains(says), "{case}: {msg}");
    }
    assert_eq!(build_count(db, ws.id).await, 1, "a refused update built nothing");

    // The update: old values kept, the new one given, the same immutable value accepted.
    let b = f
        .member
        .create_workspace_build(ws.id, &update(&[("flavor", "big"), ("disk", "10")]))
        .await
        .unwrap();
    assert_eq!(b.template_version_id, f.draft);
    let mut got = f.member.workspace_build_parameters(b.id).await.unwrap();
    got.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got, values(&[("disk", "10"), ("flavor", "big"), ("region", "us")]));
    assert!(!f.member.workspace(ws.id).await.unwrap().outdated);
    // Someone else's build's values are not the member's to read.
    let mut req = create("mine", f.template, None);
    req.rich_parameter_values = values(&[("flavor", "small")]);
    let other = f.owner.create_workspace("me", &req).await.unwrap();
    let e = f.member.workspace_build_parameters(other.latest_build.id).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn a_template_that_requires_its_active_version_moves_a_members_start_there() {
    let f = fixture().await;
    let db = &f.srv.db.pool;
    let ws = f.member.create_workspace("me", &create("ws", f.template, None)).await.unwrap();
    finish_builds(db, ws.id).await;
    // An owner moves the member's workspace to the draft: outdated.
    f.owner.create_workspace_build(ws.id, &start(Some(f.draft))).await.unwrap();
    finish_builds(db, ws.id).await;
    assert!(f.member.workspace(ws.id).await.unwrap().outdated);

    // Not required: the member's start stays on the draft.
    let b = f.member.create_workspace_build(ws.id, &start(None)).await.unwrap();
    assert_eq!(b.template_version_id, f.draft);
    finish_builds(db, ws.id).await;

    let req =
        codersdk::UpdateTemplateMeta { require_active_version: Some(true), ..Default::default() };
    let e = f.member.update_template_meta(f.template, &req).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::FORBIDDEN), "members cannot set it");
    let t = f.owner.update_template_meta(f.template, &req).await.unwrap();
    assert!(t.require_active_version);
    // An unrelated edit leaves it on.
    let ttl = codersdk::UpdateTemplateMeta { default_ttl_ms: Some(0), ..Default::default() };
    assert!(f.owner.update_template_meta(f.template, &ttl).await.unwrap().require_active_version);

    // The owner may still start the draft ...
    let b = f.owner.create_workspace_build(ws.id, &start(None)).await.unwrap();
    assert_eq!(b.template_version_id, f.draft);
    finish_builds(db, ws.id).await;
    // ... the member may not name it, and a plain start moves to the active version;
    let (got, msg) = status(
        f.member.create_workspace_build(ws.id, &start(Some(f.draft))).await.expect_err("named"),
    );
    assert_eq!(got, StatusCode::FORBIDDEN, "{msg}");
    assert!(msg.contains("requires its active version"), "{msg}");
    let stop = CreateWorkspaceBuildRequest { transition: Transition::Stop, ..start(None) };
    let b = f.member.create_workspace_build(ws.id, &stop).await.unwrap();
    assert_eq!(b.template_version_id, f.draft, "a stop stays where it runs");
    finish_builds(db, ws.id).await;
    let b = f.member.create_workspace_build(ws.id, &start(None)).await.unwrap();
    assert_eq!(b.template_version_id, f.active);
    assert!(!f.member.workspace(ws.id).await.unwrap().outdated);

    let req =
        codersdk::UpdateTemplateMeta { require_active_version: Some(false), ..Default::default() };
    assert!(!f.owner.update_template_meta(f.template, &req).await.unwrap().require_active_version);
}
