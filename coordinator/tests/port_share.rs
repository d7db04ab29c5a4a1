//! Port sharing, adversarially, against real Postgres: a dev-URL port opens
//! for its workspace's owner only until the owner shares it; a share opens
//! it to other users (`authenticated`) or to anyone (`public`), never wider
//! than the deployment's `--max-port-share-level`; nobody else can change a
//! share. The seeded agent is not connected, so a request the proxy lets
//! through ends at the mesh dial (502) — past every authorization check —
//! while a refused one is a 404 (user) or 401 (anonymous).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{seed_agent, users};
use coordinator::authz::Share;
use coordinator::testutil::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

struct Ws {
    id: Uuid,
    app_path: String,
}

/// A workspace of the site owner with agent `main`; its port 8080's path URL.
async fn owners_workspace(srv: &TestServer, owner_id: Uuid) -> Ws {
    let agent = seed_agent(&srv.db.pool, owner_id).await;
    let (user, ws): (String, String) = sqlx::query_as(
        "SELECT u.username, w.name FROM workspaces w JOIN users u ON u.id = w.owner_id
         WHERE w.id = $1",
    )
    .bind(agent.workspace)
    .fetch_one(&srv.db.pool)
    .await
    .unwrap();
    Ws { id: agent.workspace, app_path: format!("/@{user}/{ws}.main/apps/8080/") }
}

async fn open(srv: &TestServer, ws: &Ws, token: Option<&str>) -> StatusCode {
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut req = http.get(srv.url.join(&ws.app_path).unwrap());
    if let Some(t) = token {
        req = req.header(codersdk::SESSION_TOKEN_HEADER, t);
    }
    req.send().await.unwrap().status()
}

async fn share(
    srv: &TestServer,
    ws: &Ws,
    token: &str,
    method: reqwest::Method,
    body: Value,
) -> StatusCode {
    let url = srv.url.join(&format!("/api/v2/workspaces/{}/port-share", ws.id)).unwrap();
    let req = reqwest::Client::new().request(method, url);
    req.header(codersdk::SESSION_TOKEN_HEADER, token).json(&body).send().await.unwrap().status()
}

async fn stored(srv: &TestServer, ws: &Ws) -> Vec<(String, i32, String)> {
    sqlx::query_as(
        "SELECT agent_name, port, share_level FROM workspace_agent_port_shares
         WHERE workspace_id = $1 ORDER BY port",
    )
    .bind(ws.id)
    .fetch_all(&srv.db.pool)
    .await
    .unwrap()
}

fn level(l: &str) -> Value {
    json!({"agent_name": "main", "port": 8080, "share_level": l})
}

#[tokio::test]
async fn ports_open_to_others_only_as_far_as_shared_and_allowed() {
    use reqwest::Method;
    let srv = TestServer::start_with(|c| {
        c.path_apps.allow_sharing = true;
        c.max_port_share = Share::Public;
    })
    .await
    .unwrap();
    let ((owner, owner_id), (member, _)) = users(&srv).await;
    let ws = owners_workspace(&srv, owner_id).await;
    const REACHED: StatusCode = StatusCode::BAD_GATEWAY;

    // Unshared: the owner gets through, another user sees nothing, an
    // anonymous visitor must log in.
    assert_eq!(open(&srv, &ws, Some(&owner)).await, REACHED);
    assert_eq!(open(&srv, &ws, Some(&member)).await, StatusCode::NOT_FOUND);
    assert_eq!(open(&srv, &ws, None).await, StatusCode::UNAUTHORIZED);

    // Another user can neither share nor unshare the owner's port.
    assert_eq!(
        share(&srv, &ws, &member, Method::POST, level("public")).await,
        StatusCode::NOT_FOUND
    );
    assert!(stored(&srv, &ws).await.is_empty());

    // Bad input is refused and writes nothing.
    for bad in [
        json!({"agent_name": "main", "port": 0, "share_level": "authenticated"}),
        json!({"agent_name": "main", "port": 65536, "share_level": "authenticated"}),
        json!({"agent_name": "main", "port": 8080, "share_level": "everyone"}),
        json!({"agent_name": "nope", "port": 8080, "share_level": "authenticated"}),
    ] {
        assert_eq!(
            share(&srv, &ws, &owner, Method::POST, bad.clone()).await,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    assert!(stored(&srv, &ws).await.is_empty());

    // Authenticated: every logged-in user, still nobody anonymous.
    assert_eq!(
        share(&srv, &ws, &owner, Method::POST, level("authenticated")).await,
        StatusCode::OK
    );
    assert_eq!(open(&srv, &ws, Some(&member)).await, REACHED);
    assert_eq!(open(&srv, &ws, None).await, StatusCode::UNAUTHORIZED);

    // Public: anyone.
    assert_eq!(share(&srv, &ws, &owner, Method::POST, level("public")).await, StatusCode::OK);
    assert_eq!(open(&srv, &ws, None).await, REACHED);
    let listed: Value = reqwest::Client::new()
        .get(srv.url.join(&format!("/api/v2/workspaces/{}/port-share", ws.id)).unwrap())
        .header(codersdk::SESSION_TOKEN_HEADER, &owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["shares"][0]["share_level"], "public");
    assert_eq!(listed["shares"][0]["port"], 8080);

    // The other user cannot take it down either.
    let del = json!({"agent_name": "main", "port": 8080});
    assert_eq!(share(&srv, &ws, &member, Method::DELETE, del.clone()).await, StatusCode::NOT_FOUND);
    assert_eq!(stored(&srv, &ws).await, vec![("main".into(), 8080, "public".into())]);

    // Each change is audited on the workspace.
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE resource_id = $1 AND diff ? 'port_share main:8080'",
    )
    .bind(ws.id)
    .fetch_one(&srv.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 2);

    // The owner unshares: back to the owner only.
    assert_eq!(share(&srv, &ws, &owner, Method::DELETE, del).await, StatusCode::NO_CONTENT);
    assert!(stored(&srv, &ws).await.is_empty());
    assert_eq!(open(&srv, &ws, Some(&member)).await, StatusCode::NOT_FOUND);
    assert_eq!(open(&srv, &ws, None).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_deployment_maximum_caps_new_and_existing_shares() {
    use reqwest::Method;
    // The default maximum: authenticated.
    let srv = TestServer::start_with(|c| c.path_apps.allow_sharing = true).await.unwrap();
    let ((owner, owner_id), (member, _)) = users(&srv).await;
    let ws = owners_workspace(&srv, owner_id).await;
    assert_eq!(
        share(&srv, &ws, &owner, Method::POST, level("public")).await,
        StatusCode::BAD_REQUEST
    );
    assert!(stored(&srv, &ws).await.is_empty());
    // A public share stored while the maximum was higher acts as authenticated.
    sqlx::query(
        "INSERT INTO workspace_agent_port_shares (workspace_id, agent_name, port, share_level)
         VALUES ($1, 'main', 8080, 'public')",
    )
    .bind(ws.id)
    .execute(&srv.db.pool)
    .await
    .unwrap();
    assert_eq!(open(&srv, &ws, None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(open(&srv, &ws, Some(&member)).await, StatusCode::BAD_GATEWAY);
}

/// Template icons ride on the same migration: `PATCH /templates/{t}` takes
/// only `/`-relative or https URLs, and the templates page shows them.
#[tokio::test]
async fn template_icons_are_relative_or_https_and_shown_escaped() {
    let srv = TestServer::start().await.unwrap();
    let ((owner, owner_id), (member, _)) = users(&srv).await;
    let ws = owners_workspace(&srv, owner_id).await;
    let template: Uuid = sqlx::query_scalar("SELECT template_id FROM workspaces WHERE id = $1")
        .bind(ws.id)
        .fetch_one(&srv.db.pool)
        .await
        .unwrap();
    let client = srv.client().with_token(&owner);
    let icon =
        |i: &str| codersdk::UpdateTemplateMeta { icon: Some(i.into()), ..Default::default() };
    for bad in ["javascript:alert(1)", "http://example.com/a.png", "//evil.example/a.png"] {
        let e = client.update_template_meta(template, &icon(bad)).await.unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{bad}");
    }
    let other = srv.client().with_token(&member);
    let e = other.update_template_meta(template, &icon("/x.svg")).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::FORBIDDEN));
    let t = client.update_template_meta(template, &icon("/icon/go.svg?a=1&b=2")).await.unwrap();
    assert_eq!(t.icon, "/icon/go.svg?a=1&b=2");
    let page = reqwest::Client::new()
        .get(srv.url.join("/templates").unwrap())
        .header(codersdk::SESSION_TOKEN_HEADER, &owner)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<img class="icon" src="/icon/go.svg?a=1&amp;b=2""#), "{page}");
}
