//! `PATCH /api/v2/workspaceagents/me/app-health` on a real Postgres: an
//! agent reports its apps' health, which the API's app objects then show;
//! an app of another agent (or without a healthcheck, or a bad state) is
//! refused with 400 and nothing of the request is stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use codersdk::{AppHealth, Client, PatchAppHealthRequest, SdkError};
use coordinator::testutil::TestServer;
use sqlx::PgPool;
use uuid::Uuid;

/// Inserts an app for `agent`, with a healthcheck when `checked` (the
/// provisioner stores `initializing` for those, `disabled` otherwise).
async fn app(db: &PgPool, agent: Uuid, slug: &str, checked: bool) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO workspace_apps (id, agent_id, slug, healthcheck, health)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(agent)
    .bind(slug)
    .bind(checked.then(|| {
        sqlx::types::Json(
            serde_json::json!({"url": "http://127.0.0.1:1/", "interval": 1, "threshold": 2}),
        )
    }))
    .bind(if checked { "initializing" } else { "disabled" })
    .execute(db)
    .await
    .unwrap();
    id
}

fn req(pairs: &[(Uuid, AppHealth)]) -> PatchAppHealthRequest {
    PatchAppHealthRequest { healths: pairs.iter().copied().collect::<BTreeMap<_, _>>() }
}

/// The apps' health by slug, as a user sees them in the build's resources.
async fn healths(owner: &Client, workspace: Uuid) -> BTreeMap<String, AppHealth> {
    let build = owner.workspace(workspace).await.unwrap().latest_build.id;
    owner
        .workspace_build_resources(build)
        .await
        .unwrap()
        .iter()
        .flat_map(|r| r.agents.iter())
        .flat_map(|a| a.apps.iter())
        .map(|a| (a.slug.clone(), a.health))
        .collect()
}

fn assert_400(r: Result<(), SdkError>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.status(), Some(reqwest::StatusCode::BAD_REQUEST), "{what}: {e}");
}

#[tokio::test]
async fn agents_report_their_own_apps_health_only() {
    let srv = TestServer::start().await.unwrap();
    let owner = srv.owner().await.unwrap();
    let me = owner.me().await.unwrap().id;
    let db = &srv.db.pool;
    let mut seeded = coordinator::testutil::seed_agents(db, me, 2).await.unwrap();
    let (mine, other) = (seeded.remove(0), seeded.remove(0));
    let web = app(db, mine.id, "web", true).await;
    let docs = app(db, mine.id, "docs", false).await;
    let foreign = app(db, other.id, "foreign", true).await;
    let agent = Client::new(srv.url.clone()).with_token(mine.token.clone());

    let before = healths(&owner, mine.workspace).await;
    assert_eq!(before["web"], AppHealth::Initializing);
    assert_eq!(before["docs"], AppHealth::Disabled);
    // The agent's manifest carries the healthcheck it is to run.
    let manifest = agent.agent_manifest().await.unwrap();
    let hc = manifest.apps.iter().find(|a| a.id == web).unwrap().healthcheck.clone().unwrap();
    assert_eq!((hc.url.as_str(), hc.interval, hc.threshold), ("http://127.0.0.1:1/", 1, 2));

    agent.patch_agent_app_health(&req(&[(web, AppHealth::Healthy)])).await.unwrap();
    assert_eq!(healths(&owner, mine.workspace).await["web"], AppHealth::Healthy);

    // Another agent's app, even beside a valid change: 400, nothing stored.
    assert_400(
        agent
            .patch_agent_app_health(&req(&[
                (web, AppHealth::Unhealthy),
                (foreign, AppHealth::Unhealthy),
            ]))
            .await,
        "a foreign app",
    );
    assert_400(
        agent.patch_agent_app_health(&req(&[(Uuid::new_v4(), AppHealth::Healthy)])).await,
        "an unknown app",
    );
    assert_400(
        agent.patch_agent_app_health(&req(&[(docs, AppHealth::Healthy)])).await,
        "an app without a healthcheck",
    );
    assert_400(
        agent.patch_agent_app_health(&req(&[(web, AppHealth::Disabled)])).await,
        "disabling a checked app",
    );
    let after = healths(&owner, mine.workspace).await;
    assert_eq!(after["web"], AppHealth::Healthy, "a refused request changed web");
    assert_eq!(after["docs"], AppHealth::Disabled);
    let foreign_health: String =
        sqlx::query_scalar("SELECT health FROM workspace_apps WHERE id = $1")
            .bind(foreign)
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(foreign_health, "initializing", "another agent's app was changed");

    // The other agent may report its own app; a user token may not.
    let other_agent = Client::new(srv.url.clone()).with_token(other.token.clone());
    other_agent.patch_agent_app_health(&req(&[(foreign, AppHealth::Unhealthy)])).await.unwrap();
    assert_eq!(healths(&owner, other.workspace).await["foreign"], AppHealth::Unhealthy);
    let r = owner.patch_agent_app_health(&req(&[(web, AppHealth::Unhealthy)])).await;
    assert!(r.is_err(), "a user session reported app health");
    assert_eq!(healths(&owner, mine.workspace).await["web"], AppHealth::Healthy);
}
