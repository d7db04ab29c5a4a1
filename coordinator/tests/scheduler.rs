//! The autostart/autostop scheduler on a real Postgres: which workspaces are
//! due, that two schedulers racing on one database fire each transition
//! once, that a scheduler stopped after firing (or one that died holding
//! the lock) neither repeats nor loses a transition, autostart, the activity
//! bump, and the TTL rules of the API. No provisioner runs: the builds the
//! scheduler starts stay queued, which is all these tests look at.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use codersdk::{AgentStats, Client};
use coordinator::provisionerd::queue;
use coordinator::scheduler::{self, Scheduler};
use coordinator::testutil::{seed_agents, TestServer};
use coordinator::{ApiConfig, AppState};
use sqlx::PgPool;
use uuid::Uuid;

async fn owner(srv: &TestServer) -> (Client, Uuid) {
    let c = srv.owner().await.unwrap();
    let id = c.me().await.unwrap().id;
    (c, id)
}

/// Gives the workspaces a TTL and their running build a deadline `offset` from now.
async fn set_deadline(db: &PgPool, ws: &[Uuid], offset: chrono::Duration) {
    sqlx::query("UPDATE workspaces SET ttl_ms = 60000 WHERE id = ANY($1)")
        .bind(ws)
        .execute(db)
        .await
        .unwrap();
    sqlx::query("UPDATE workspace_builds SET deadline = now() + $2 WHERE workspace_id = ANY($1)")
        .bind(ws)
        .bind(offset)
        .execute(db)
        .await
        .unwrap();
}

/// `(build_number, transition, reason)` of a workspace's builds, oldest first.
async fn builds(db: &PgPool, ws: Uuid) -> Vec<(i32, String, String)> {
    sqlx::query_as(
        "SELECT build_number, transition, reason FROM workspace_builds
         WHERE workspace_id = $1 ORDER BY build_number",
    )
    .bind(ws)
    .fetch_all(db)
    .await
    .unwrap()
}

async fn audit_count(db: &PgPool, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE action = $1")
        .bind(action)
        .fetch_one(db)
        .await
        .unwrap()
}

fn ids(agents: &[coordinator::testutil::SeededAgent]) -> Vec<Uuid> {
    agents.iter().map(|a| a.workspace).collect()
}

#[tokio::test]
async fn two_schedulers_racing_fire_each_due_stop_once() {
    let srv = TestServer::start().await.unwrap();
    let (_, owner_id) = owner(&srv).await;
    let db = &srv.db.pool;
    let due = ids(&seed_agents(db, owner_id, 250).await.unwrap());
    let later = ids(&seed_agents(db, owner_id, 5).await.unwrap());
    let manual = ids(&seed_agents(db, owner_id, 5).await.unwrap());
    set_deadline(db, &due, chrono::Duration::seconds(-1)).await;
    set_deadline(db, &later, chrono::Duration::hours(1)).await;
    // A second replica: its own state (pool, pubsub, queue) on the same database.
    let other = AppState::new(db.clone(), ApiConfig::default());
    let now = Utc::now();
    let (a, b) = tokio::join!(scheduler::tick(&srv.state, now), scheduler::tick(&other, now));
    let (a, b) = (a.unwrap(), b.unwrap());
    let sa: BTreeSet<Uuid> = a.stopped.iter().copied().collect();
    let sb: BTreeSet<Uuid> = b.stopped.iter().copied().collect();
    assert_eq!(sa.len() + sb.len(), due.len(), "a: {}, b: {}", sa.len(), sb.len());
    assert!(sa.is_disjoint(&sb), "both schedulers stopped {:?}", sa.intersection(&sb));
    let all: BTreeSet<Uuid> = sa.union(&sb).copied().collect();
    assert_eq!(all, due.iter().copied().collect());
    for ws in &due {
        let b = builds(db, *ws).await;
        assert_eq!(
            b,
            vec![(1, "start".into(), "initiator".into()), (2, "stop".into(), "autostop".into())]
        );
    }
    for ws in later.iter().chain(&manual) {
        assert_eq!(builds(db, *ws).await.len(), 1, "{ws} was not due");
    }
    // The audit log has one stop per transition, as the owner, saying why.
    assert_eq!(audit_count(db, "stop").await, due.len() as i64);
    let (who, diff): (String, serde_json::Value) = sqlx::query_as(
        "SELECT username, diff FROM audit_logs WHERE action = 'stop' AND resource_id =
           (SELECT id FROM workspace_builds WHERE workspace_id = $1 AND build_number = 2)",
    )
    .bind(due[0])
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(who, "owner");
    assert_eq!(diff["reason"]["new"], "autostop", "{diff}");
    // Each build is a queued job, like a manual one.
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM provisioner_jobs j JOIN workspace_builds b ON b.job_id = j.id
         WHERE b.reason = 'autostop' AND j.started_at IS NULL",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(queued, due.len() as i64);
    // Nothing is due any more, on either replica.
    let again = scheduler::tick(&other, Utc::now()).await.unwrap();
    assert!(again.stopped.is_empty() && again.started.is_empty(), "{again:?}");
}

#[tokio::test]
async fn a_restart_neither_repeats_nor_loses_a_transition() {
    let srv = TestServer::start().await.unwrap();
    let (_, owner_id) = owner(&srv).await;
    let db = &srv.db.pool;
    let ws = ids(&seed_agents(db, owner_id, 2).await.unwrap());
    set_deadline(db, &ws, chrono::Duration::seconds(-1)).await;

    // A replica that locked the first workspace and died before committing:
    // the others skip it while its connection holds the lock ...
    let mut dying = db.begin().await.unwrap();
    sqlx::query("SELECT id FROM workspaces WHERE id = $1 FOR UPDATE")
        .bind(ws[0])
        .execute(&mut *dying)
        .await
        .unwrap();
    let first = AppState::new(db.clone(), ApiConfig::default());
    let fired = scheduler::tick(&first, Utc::now()).await.unwrap();
    assert_eq!(fired.stopped, vec![ws[1]]);
    // ... and once it is gone (its transaction rolled back), nothing is lost.
    drop(dying);

    // The running scheduler fires it (its build's job is posted), and is
    // stopped right after.
    let mut posted = first.pubsub.subscribe(queue::CHANNEL_JOB_POSTED).await;
    let running = Scheduler::spawn(first.clone(), Duration::from_millis(50));
    tokio::time::timeout(Duration::from_secs(20), posted.recv())
        .await
        .expect("the scheduler never fired")
        .unwrap();
    running.shutdown().await;
    assert_eq!(builds(db, ws[0]).await.len(), 2);

    // A new coderd (new state, new scheduler) finds nothing left to fire.
    let restarted = AppState::new(db.clone(), ApiConfig::default());
    let fired = scheduler::tick(&restarted, Utc::now()).await.unwrap();
    assert!(fired.stopped.is_empty(), "fired again after a restart: {fired:?}");
    for w in &ws {
        let b = builds(db, *w).await;
        assert_eq!(b.len(), 2, "{w}: {b:?}");
        assert_eq!(b[1].2, "autostop");
    }
    assert_eq!(audit_count(db, "stop").await, 2);
}

/// Marks a workspace's latest build's job as finished successfully.
async fn finish_latest_job(db: &PgPool, ws: Uuid) {
    sqlx::query(
        "UPDATE provisioner_jobs SET started_at = now(), completed_at = now() WHERE id =
           (SELECT job_id FROM workspace_builds WHERE workspace_id = $1
            ORDER BY build_number DESC LIMIT 1)",
    )
    .bind(ws)
    .execute(db)
    .await
    .unwrap();
}

#[tokio::test]
async fn autostart_starts_a_stopped_workspace_at_its_minute_once() {
    let srv = TestServer::start().await.unwrap();
    let (client, owner_id) = owner(&srv).await;
    let db = &srv.db.pool;
    let ws = ids(&seed_agents(db, owner_id, 2).await.unwrap());
    // Both stopped by the scheduler; only the first is left stopped.
    set_deadline(db, &ws, chrono::Duration::seconds(-1)).await;
    scheduler::tick(&srv.state, Utc::now()).await.unwrap();
    finish_latest_job(db, ws[0]).await;

    let bad = client.update_workspace_autostart(ws[0], Some("9:30 Someday".into())).await;
    let e = bad.unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::BAD_REQUEST));
    assert!(e.to_string().contains("Someday"), "{e}");
    for w in &ws {
        let set = client.update_workspace_autostart(*w, Some("9:30 Mon-Fri Europe/Dublin".into()));
        let w = set.await.unwrap();
        assert_eq!(w.autostart_schedule.as_deref(), Some("9:30 Mon-Fri Europe/Dublin"));
        assert!(w.next_start_at.unwrap() > Utc::now());
    }
    // Not yet due: nothing happens.
    let fired = scheduler::tick(&srv.state, Utc::now()).await.unwrap();
    assert!(fired.started.is_empty());
    // The minute comes (moved into the past rather than waiting for Monday).
    sqlx::query("UPDATE workspaces SET next_start_at = now() - interval '1 second'")
        .execute(db)
        .await
        .unwrap();
    let now = Utc::now();
    let fired = scheduler::tick(&srv.state, now).await.unwrap();
    // The second is still stopping (its job runs): it waits for the next minute.
    assert_eq!(fired.started, vec![ws[0]]);
    let b = builds(db, ws[0]).await;
    assert_eq!(b.last().unwrap(), &(3, "start".into(), "autostart".into()));
    assert_eq!(builds(db, ws[1]).await.len(), 2);
    // Both moved on to the next occurrence, so nothing fires twice.
    let next: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT next_start_at FROM workspaces WHERE id = ANY($1)")
            .bind(&ws)
            .fetch_all(db)
            .await
            .unwrap();
    assert!(next.iter().all(|n| *n > now), "{next:?}");
    let fired = scheduler::tick(&srv.state, Utc::now()).await.unwrap();
    assert!(fired.started.is_empty());
    assert_eq!(audit_count(db, "start").await, 1);
    // `manual` turns it off.
    let w = client.update_workspace_autostart(ws[0], None).await.unwrap();
    assert_eq!((w.autostart_schedule, w.next_start_at), (None, None));
}

async fn deadline_of(db: &PgPool, ws: Uuid) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT deadline FROM workspace_builds WHERE workspace_id = $1")
        .bind(ws)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn activity_pushes_the_deadline_forward_up_to_the_max() {
    let srv = TestServer::start().await.unwrap();
    let (client, owner_id) = owner(&srv).await;
    let db = &srv.db.pool;
    let agent = seed_agents(db, owner_id, 1).await.unwrap().remove(0);
    let ws = agent.workspace;
    let agent_client = srv.client().with_token(&agent.token);
    // A one-minute TTL set on the running workspace: deadline ~ now + 1m.
    let w = client.update_workspace_ttl(ws, Some(60_000)).await.unwrap();
    assert_eq!(w.ttl_ms, Some(60_000));
    let first = deadline_of(db, ws).await;
    let left = (first - Utc::now()).num_seconds();
    assert!((50..=60).contains(&left), "{left}");
    // Idle stats leave it alone.
    sqlx::query("UPDATE workspace_builds SET deadline = now() + interval '5 seconds'")
        .execute(db)
        .await
        .unwrap();
    let before = deadline_of(db, ws).await;
    agent_client.post_agent_stats(&AgentStats::default()).await.unwrap();
    assert_eq!(deadline_of(db, ws).await, before);
    // An open SSH session moves it to now + TTL.
    let busy = AgentStats { session_count: 1, ..Default::default() };
    agent_client.post_agent_stats(&busy).await.unwrap();
    let bumped = deadline_of(db, ws).await;
    assert!((bumped - Utc::now()).num_seconds() >= 55, "{bumped}");
    let used: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT last_used_at FROM workspaces WHERE id = $1")
            .bind(ws)
            .fetch_one(db)
            .await
            .unwrap();
    assert!(used.is_some());
    // A forward counts too, but never past the max deadline.
    let cap = Utc::now() + chrono::Duration::seconds(20);
    sqlx::query(
        "UPDATE workspace_builds SET max_deadline = $2, deadline = now() WHERE workspace_id = $1",
    )
    .bind(ws)
    .bind(cap)
    .execute(db)
    .await
    .unwrap();
    let forward = AgentStats { session_count_port_forward: 1, ..Default::default() };
    agent_client.post_agent_stats(&forward).await.unwrap();
    let capped = deadline_of(db, ws).await;
    assert!((capped - cap).num_milliseconds().abs() < 1, "{capped} vs {cap}");
    // Extending past the max is refused; within it, accepted.
    let e = client.extend_workspace(ws, cap + chrono::Duration::hours(1)).await.unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::BAD_REQUEST));
    let w = client.extend_workspace(ws, cap - chrono::Duration::seconds(5)).await.unwrap();
    assert!(w.latest_build.deadline.is_some());
}

#[tokio::test]
async fn a_ttl_above_the_templates_max_is_refused() {
    let srv = TestServer::start().await.unwrap();
    let (client, owner_id) = owner(&srv).await;
    let db = &srv.db.pool;
    let ws = seed_agents(db, owner_id, 1).await.unwrap().remove(0).workspace;
    let w = client.workspace(ws).await.unwrap();
    let hour = 3_600_000;
    let req = codersdk::UpdateTemplateMeta {
        default_ttl_ms: Some(48 * hour),
        max_ttl_ms: Some(24 * hour),
        ..Default::default()
    };
    let e = client.update_template_meta(w.template_id, &req).await.unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::BAD_REQUEST));
    let req = codersdk::UpdateTemplateMeta {
        default_ttl_ms: Some(8 * hour),
        max_ttl_ms: Some(24 * hour),
        ..Default::default()
    };
    let t = client.update_template_meta(w.template_id, &req).await.unwrap();
    assert_eq!((t.default_ttl_ms, t.max_ttl_ms), (8 * hour, 24 * hour));
    let e = client.update_workspace_ttl(ws, Some(25 * hour)).await.unwrap_err();
    assert_eq!(e.status(), Some(reqwest::StatusCode::BAD_REQUEST));
    assert!(e.to_string().contains("longer than template"), "{e}");
    client.update_workspace_ttl(ws, Some(24 * hour)).await.unwrap();
    let w = client.update_workspace_ttl(ws, None).await.unwrap();
    assert_eq!(w.ttl_ms, None);
    assert_eq!(w.latest_build.deadline, None);
}
