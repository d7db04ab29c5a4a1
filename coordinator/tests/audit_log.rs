//! User lifecycle and the audit log against the real router and Postgres:
//! one of each audited action, the rows they leave (and that no secret is
//! in any of them), the query API and who may read it, and what suspension
//! and deletion do to a user's credentials. No provisioner runs: builds
//! stay queued, and are canceled to make room for the next.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use codersdk::{
    AuditAction, AuditLog, Client, CreateTemplateRequest, CreateTemplateVersionRequest,
    CreateTokenRequest, CreateUserRequest, CreateWorkspaceBuildRequest, CreateWorkspaceRequest,
    LoginWithPasswordRequest, ResourceType, Role, SdkError, Transition, UpdatePasswordRequest,
};
use coordinator::testutil::TestServer;
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

/// A template version that imported, attached to `template` (or to none).
async fn seed_version(db: &PgPool, owner: Uuid, template: Option<Uuid>) -> Uuid {
    let (file, job, version) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("INSERT INTO files (id, hash, mimetype, data, created_by) VALUES ($1, $2, 'application/x-tar', '', $3)")
        .bind(file).bind(file.simple().to_string()).bind(owner).execute(db).await.unwrap();
    sqlx::query(
        "INSERT INTO provisioner_jobs (id, type, input, file_id, initiator_id, started_at, completed_at)
         VALUES ($1, 'template_version_import', '{}', $2, $3, now(), now())",
    )
    .bind(job).bind(file).bind(owner).execute(db).await.unwrap();
    sqlx::query("INSERT INTO template_versions (id, template_id, name, job_id, created_by) VALUES ($1, $2, $3, $4, $5)")
        .bind(version).bind(template).bind(format!("v-{}", &version.simple().to_string()[..6])).bind(job).bind(owner)
        .execute(db).await.unwrap();
    version
}

async fn login(srv: &TestServer, username: &str, password: &str) -> Result<Client, SdkError> {
    let req = LoginWithPasswordRequest {
        username: username.into(),
        password: password.into(),
        ..Default::default()
    };
    let token = srv.client().login_with_password(&req).await?.session_token;
    Ok(srv.client().with_token(token))
}

fn status(e: SdkError) -> Option<StatusCode> {
    e.status()
}

async fn new_user(owner: &Client, name: &str, roles: Vec<Role>) -> Uuid {
    let req = CreateUserRequest {
        email: format!("{name}@example.com"),
        username: name.into(),
        password: format!("{name}-password"),
        roles,
    };
    owner.create_user(&req).await.unwrap().id
}

/// Cancels a workspace's latest (queued) build.
async fn cancel_latest(c: &Client, ws: Uuid) {
    let builds = c.workspace_builds(ws).await.unwrap();
    let latest = builds.iter().max_by_key(|b| b.build_number).unwrap();
    c.cancel_workspace_build(latest.id).await.unwrap();
}

fn build(t: Transition, version: Option<Uuid>) -> CreateWorkspaceBuildRequest {
    CreateWorkspaceBuildRequest {
        transition: t,
        template_version_id: version,
        rich_parameter_values: vec![],
    }
}

#[tokio::test]
async fn every_state_change_leaves_one_row_and_no_secret() {
    let srv = TestServer::start_with_provisioner_key("no-provisioner-runs-here").await.unwrap();
    let owner = srv.owner().await.unwrap();
    let owner_id = owner.me().await.unwrap().id;
    let mut secrets: Vec<String> = vec![owner.token().unwrap().to_owned()];

    // Logins: a wrong password, an unknown user.
    let e = login(&srv, "owner", "wrong-password").await.err().unwrap();
    assert_eq!(status(e), Some(StatusCode::UNAUTHORIZED));
    let e = login(&srv, "nobody-at-all", "wrong-password").await.err().unwrap();
    assert_eq!(status(e), Some(StatusCode::UNAUTHORIZED));

    // Users: create, roles, suspend, activate, password reset and change.
    let alice = new_user(&owner, "alice", vec![Role::Member]).await;
    new_user(&owner, "ua", vec![Role::UserAdmin]).await;
    new_user(&owner, "aud", vec![Role::Auditor]).await;
    let alice_c = login(&srv, "alice", "alice-password").await.unwrap();
    secrets.push(alice_c.token().unwrap().to_owned());
    owner.update_roles("alice", &[Role::TemplateAdmin]).await.unwrap();
    let u = owner.suspend_user("alice").await.unwrap();
    assert_eq!(u.status, codersdk::UserStatus::Suspended);
    // A suspended user's session stops at once, and says why.
    let e = alice_c.me().await.err().unwrap();
    assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(e.to_string().contains("suspended"), "{e}");
    // The right password of a suspended account is refused with the reason.
    let e = login(&srv, "alice", "alice-password").await.err().unwrap();
    assert!(e.to_string().contains("suspended"), "{e}");
    owner.activate_user("alice").await.unwrap();
    alice_c.me().await.expect("activation restores the session");
    let reset =
        UpdatePasswordRequest { old_password: String::new(), password: "reset-password-1".into() };
    owner.update_password("alice", &reset).await.unwrap();
    let alice_c = login(&srv, "alice", "reset-password-1").await.unwrap();
    secrets.push(alice_c.token().unwrap().to_owned());
    let wrong = UpdatePasswordRequest {
        old_password: "not-it-at-all".into(),
        password: "alice-new-pass".into(),
    };
    let e = alice_c.update_password("me", &wrong).await.err().unwrap();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "the old password is required");
    let own = UpdatePasswordRequest {
        old_password: "reset-password-1".into(),
        password: "alice-new-pass".into(),
    };
    alice_c.update_password("me", &own).await.unwrap();
    alice_c.me().await.expect("changing one's password keeps the session that did it");
    secrets.extend(["reset-password-1".to_owned(), "alice-new-pass".to_owned()]);

    // User admins: not the owner's account, not the owner role; nobody themselves.
    let ua = login(&srv, "ua", "ua-password").await.unwrap();
    assert_eq!(ua.suspend_user("owner").await.err().unwrap().status(), Some(StatusCode::FORBIDDEN));
    let e = ua.update_roles("alice", &[Role::Owner]).await.err().unwrap();
    assert_eq!(e.status(), Some(StatusCode::FORBIDDEN));
    ua.update_roles("alice", &[Role::Auditor]).await.unwrap();
    assert_eq!(ua.suspend_user("ua").await.err().unwrap().status(), Some(StatusCode::BAD_REQUEST));
    let e = ua.update_password("owner", &reset).await.err().unwrap();
    assert_eq!(e.status(), Some(StatusCode::FORBIDDEN));

    // Tokens.
    let token = owner
        .create_token(&CreateTokenRequest { token_name: "ci".into(), lifetime: 0 })
        .await
        .unwrap()
        .key;
    secrets.push(token.clone());
    owner.delete_token("ci").await.unwrap();

    // Templates: a version pushed, a template created, another version promoted.
    let file = owner.upload("application/x-tar", vec![0u8; 1024]).await.unwrap();
    owner
        .create_template_version(&CreateTemplateVersionRequest {
            file_id: file,
            template_id: None,
            name: String::new(),
            message: "pushed".into(),
        })
        .await
        .unwrap();
    let v1 = seed_version(&srv.db.pool, owner_id, None).await;
    let t = owner
        .create_template(&CreateTemplateRequest {
            name: "tpl".into(),
            template_version_id: v1,
            display_name: String::new(),
            description: String::new(),
        })
        .await
        .unwrap();
    let v2 = seed_version(&srv.db.pool, owner_id, Some(t.id)).await;
    owner.set_active_version(t.id, v2).await.unwrap();

    // Workspaces: create (a start build), cancel, stop, update, delete.
    let req = CreateWorkspaceRequest {
        name: "ws".into(),
        template_id: t.id,
        template_version_id: Some(v1),
        rich_parameter_values: vec![],
    };
    let ws = owner.create_workspace("me", &req).await.unwrap();
    cancel_latest(&owner, ws.id).await;
    owner.create_workspace_build(ws.id, &build(Transition::Stop, None)).await.unwrap();
    cancel_latest(&owner, ws.id).await;
    owner.create_workspace_build(ws.id, &build(Transition::Start, Some(v2))).await.unwrap();
    cancel_latest(&owner, ws.id).await;
    // A user with a workspace is not deleted until it is.
    let bob = new_user(&owner, "bob", vec![Role::Member]).await;
    let bob_ws = CreateWorkspaceRequest { name: "bobs".into(), ..req.clone() };
    let bws = owner.create_workspace("bob", &bob_ws).await.unwrap();
    let e = owner.delete_user("bob").await.err().unwrap();
    assert_eq!(e.status(), Some(StatusCode::CONFLICT));
    assert!(e.to_string().contains("bobs"), "{e}");
    sqlx::query("UPDATE workspaces SET deleted = true WHERE id = $1")
        .bind(bws.id)
        .execute(&srv.db.pool)
        .await
        .unwrap();
    owner.delete_user("bob").await.unwrap();
    assert!(owner.user(&bob.to_string()).await.is_err(), "a deleted user is gone");
    owner.create_workspace_build(ws.id, &build(Transition::Delete, None)).await.unwrap();
    owner.logout().await.unwrap();

    // Every listed action has its row.
    let auditor = login(&srv, "aud", "aud-password").await.unwrap();
    let all = auditor.audit_logs("", 1000, 0).await.unwrap();
    assert_eq!(all.count as usize, all.audit_logs.len());
    let seen: BTreeSet<(String, String)> = all
        .audit_logs
        .iter()
        .map(|l| (l.action.to_string(), l.resource_type.to_string()))
        .collect();
    use AuditAction as A;
    use ResourceType as R;
    for (a, r) in [
        (A::Login, R::User),
        (A::Logout, R::User),
        (A::Create, R::User),
        (A::Write, R::User),
        (A::Delete, R::User),
        (A::Create, R::ApiKey),
        (A::Delete, R::ApiKey),
        (A::Create, R::TemplateVersion),
        (A::Create, R::Template),
        (A::Write, R::Template),
        (A::Create, R::Workspace),
        (A::Stop, R::WorkspaceBuild),
        (A::Start, R::WorkspaceBuild),
        (A::Delete, R::WorkspaceBuild),
        (A::Cancel, R::WorkspaceBuild),
    ] {
        assert!(seen.contains(&(a.to_string(), r.to_string())), "no {a} {r} row in {seen:#?}");
    }
    let find = |f: &dyn Fn(&AuditLog) -> bool| all.audit_logs.iter().filter(|l| f(l)).count();
    // The failed logins: one of a known user, one of a name nobody has.
    assert_eq!(
        find(&|l| l.action == A::Login
            && l.status_code == 401
            && l.user_id.is_none()
            && l.username == "nobody-at-all"),
        1
    );
    assert_eq!(
        find(&|l| l.action == A::Login && l.status_code == 401 && l.user_id == Some(owner_id)),
        1
    );
    // The suspension's diff, the role change's, the update's version.
    assert_eq!(
        find(&|l| l.resource_id == Some(alice)
            && l.diff["status"] == serde_json::json!({"old": "active", "new": "suspended"})),
        1
    );
    assert!(find(&|l| l.diff.get("roles").is_some() && l.resource_name == "alice") >= 2);
    assert_eq!(
        find(&|l| l.action == A::Start
            && l.diff["template_version_id"] == serde_json::json!({"old": v1, "new": v2})),
        1
    );
    assert_eq!(
        find(&|l| l.action == A::Write
            && l.resource_type == R::Template
            && l.diff["active_version_id"]["new"] == serde_json::json!(v2)),
        1
    );
    // Refused changes leave no row.
    assert_eq!(find(&|l| l.resource_name == "owner" && l.action == A::Write), 0);
    // Every row names its source and client.
    assert!(all.audit_logs.iter().all(|l| l.ip.as_deref() == Some("127.0.0.1")), "{all:#?}");
    assert!(all.audit_logs.iter().all(|l| !l.user_agent.is_empty()));

    // No secret anywhere: not the tokens handed out, the passwords, the
    // stored hashes or the keys' hashed secrets.
    let hashes: Vec<Option<String>> = sqlx::query_scalar("SELECT hashed_password FROM users")
        .fetch_all(&srv.db.pool)
        .await
        .unwrap();
    secrets.extend(hashes.into_iter().flatten());
    let key_hashes: Vec<Vec<u8>> = sqlx::query_scalar("SELECT hashed_secret FROM api_keys")
        .fetch_all(&srv.db.pool)
        .await
        .unwrap();
    secrets.extend(key_hashes.iter().map(hex::encode));
    secrets.extend(["owner-password".to_owned(), "alice-password".to_owned(), "argon2".to_owned()]);
    let raw: Vec<String> = sqlx::query_scalar("SELECT row_to_json(a)::text FROM audit_logs a")
        .fetch_all(&srv.db.pool)
        .await
        .unwrap();
    assert_eq!(raw.len(), all.audit_logs.len());
    for row in &raw {
        for s in &secrets {
            // A token's secret half is what must never show; its id may.
            let s = s.split_once('-').filter(|(id, _)| id.len() == 10).map_or(s.as_str(), |p| p.1);
            assert!(s.len() >= 6, "too short to scan for: {s:?}");
            assert!(!row.contains(s), "a secret in an audit row: {row}");
        }
    }

    // Queries: by user and action, by resource type and time; paginated.
    let q = auditor.audit_logs("username:alice action:login", 100, 0).await.unwrap();
    assert!(q.count >= 2, "{q:#?}");
    assert!(q.audit_logs.iter().all(|l| l.username == "alice" && l.action == A::Login));
    let q = auditor.audit_logs("resource_type:template", 100, 0).await.unwrap();
    assert!(q.audit_logs.iter().all(|l| l.resource_type == R::Template) && q.count == 2);
    let q = auditor.audit_logs("time_after:2100-01-01", 100, 0).await.unwrap();
    assert_eq!(q.count, 0);
    let page = auditor.audit_logs("", 2, 1).await.unwrap();
    assert_eq!(page.audit_logs.len(), 2);
    assert_eq!(page.audit_logs[0], all.audit_logs[1], "newest first, offset honoured");
    let e = auditor.audit_logs("action:explode", 10, 0).await.err().unwrap();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));

    // Owners and auditors read the log; nobody else.
    let alice_c = login(&srv, "alice", "alice-new-pass").await.unwrap();
    // (alice is an auditor now: ua made her one.)
    alice_c.audit_logs("", 1, 0).await.unwrap();
    let e = ua.audit_logs("", 1, 0).await.err().unwrap();
    assert_eq!(e.status(), Some(StatusCode::FORBIDDEN), "user admins do not read the log");
    new_user(&ua, "m", vec![]).await;
    let m = login(&srv, "m", "m-password").await.unwrap();
    assert_eq!(m.audit_logs("", 1, 0).await.err().unwrap().status(), Some(StatusCode::FORBIDDEN));
}
