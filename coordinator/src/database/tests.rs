//! Tests of the data layer on a real Postgres: the workspace listing reads
//! a fixed number of statements however many workspaces there are, and
//! still reports each one's owner, template and latest build.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use codersdk::{Role, Transition, WorkspaceStatus};
use sqlx::PgPool;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use uuid::Uuid;

use super::builds::workspace_status;
use super::workspaces::{self, Owners};
use super::{resources, templates, users};
use crate::testutil;

/// Counts the statements sqlx executes (its `sqlx::query` log events; the
/// pool logs every statement at debug level).
struct StatementCounter(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for StatementCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs `f` on this thread and returns its output and the statements it ran.
async fn counted<T>(f: impl std::future::Future<Output = T>) -> (T, usize) {
    let n = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(StatementCounter(n.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let out = f.await;
    (out, n.load(Ordering::Relaxed))
}

async fn user(db: &PgPool, name: &str, roles: &[Role]) -> Uuid {
    let u = users::NewUser {
        email: &format!("{name}@example.com"),
        username: name,
        hashed_password: String::new(),
        roles,
    };
    users::insert(db, u).await.unwrap().id
}

/// Gives `workspace` a second, still pending `stop` build.
async fn queue_stop(db: &PgPool, workspace: Uuid) {
    let (version, file, owner): (Uuid, Uuid, Uuid) = sqlx::query_as(
        "SELECT b.template_version_id, j.file_id, j.initiator_id FROM workspace_builds b
         JOIN provisioner_jobs j ON j.id = b.job_id WHERE b.workspace_id = $1",
    )
    .bind(workspace)
    .fetch_one(db)
    .await
    .unwrap();
    let job = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO provisioner_jobs (id, type, input, file_id, initiator_id)
         VALUES ($1, 'workspace_build', '{}', $2, $3)",
    )
    .bind(job)
    .bind(file)
    .bind(owner)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO workspace_builds (id, workspace_id, template_version_id, build_number, transition, initiator_id, job_id)
         VALUES ($1, $2, $3, 2, 'stop', $4, $5)",
    )
    .bind(Uuid::new_v4())
    .bind(workspace)
    .bind(version)
    .bind(owner)
    .bind(job)
    .execute(db)
    .await
    .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn listing_workspaces_runs_a_fixed_number_of_statements() {
    let db = testutil::database().await.unwrap();
    let db = &db.pool;
    let alice = user(db, "alice", &[Role::Owner]).await;
    let bob = user(db, "bob", &[Role::Member]).await;
    testutil::seed_agents(db, alice, 1).await.unwrap();

    let (one, with_one) = counted(workspaces::list(db, Owners::All)).await;
    assert_eq!(one.unwrap().len(), 1);
    let (jobs_one, res_one) = counted(async {
        let listed = workspaces::list(db, Owners::All).await.unwrap();
        let jobs: Vec<Uuid> = listed.iter().map(|l| l.latest.as_ref().unwrap().0.job_id).collect();
        resources::of_jobs(db, &jobs).await.unwrap()
    })
    .await;
    assert_eq!(jobs_one.len(), 1);

    let seeded = testutil::seed_agents(db, bob, 7).await.unwrap();
    queue_stop(db, seeded[0].workspace).await;
    let (eight, with_eight) = counted(workspaces::list(db, Owners::All)).await;
    let eight = eight.unwrap();
    let (res_eight, res_with_eight) = counted(async {
        let jobs: Vec<Uuid> = eight.iter().map(|l| l.latest.as_ref().unwrap().0.job_id).collect();
        resources::of_jobs(db, &jobs).await.unwrap()
    })
    .await;

    assert!(with_one > 0, "no statements were counted: the counter is blind");
    assert_eq!(with_one, with_eight, "the listing's statements grow with the workspaces");
    assert_eq!(with_one, 3);
    // The dashboard's resources for every listed workspace: also fixed.
    assert_eq!(res_one, with_one + 3);
    assert_eq!(res_with_eight, 3);
    assert_eq!(res_eight.len(), 7, "the queued stop build recorded no resources yet");

    // And the listing is still right.
    assert_eq!(eight.len(), 8);
    let template_names: HashMap<Uuid, String> =
        templates::list(db).await.unwrap().into_iter().map(|t| (t.id, t.name)).collect();
    let names: Vec<&str> = eight.iter().map(|l| l.workspace.owner_name.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "bob", "bob", "bob", "bob", "bob", "bob"]);
    for l in &eight {
        let w = &l.workspace;
        assert_eq!(w.owner_id, if w.owner_name == "alice" { alice } else { bob });
        assert_eq!(template_names[&w.template_id], w.template_name);
        let (build, job) = l.latest.as_ref().unwrap();
        assert_eq!(build.workspace_id, w.id);
        assert_eq!(job.id, build.job_id);
        let status = job.status();
        let expected = if w.id == seeded[0].workspace {
            assert_eq!((build.build_number, build.transition), (2, Transition::Stop));
            WorkspaceStatus::Pending
        } else {
            assert_eq!((build.build_number, build.transition), (1, Transition::Start));
            WorkspaceStatus::Running
        };
        assert_eq!(workspace_status(build.transition, status), expected);
    }
    let bobs = workspaces::list(db, Owners::Only(bob)).await.unwrap();
    assert_eq!(bobs.len(), 7);
    assert!(bobs.iter().all(|l| l.workspace.owner_id == bob));
}

#[tokio::test]
async fn an_unknown_role_is_an_error_not_dropped() {
    let db = testutil::database().await.unwrap();
    let db = &db.pool;
    let carol = user(db, "carol", &[Role::Member, Role::Owner]).await;
    let row = users::by_id(db, carol).await.unwrap().unwrap();
    assert_eq!(row.roles.0, [Role::Member, Role::Owner]);
    sqlx::query("UPDATE users SET roles = '{member,wizard}' WHERE id = $1")
        .bind(carol)
        .execute(db)
        .await
        .unwrap();
    let err = users::by_id(db, carol).await.unwrap_err();
    assert!(matches!(err, sqlx::Error::ColumnDecode { .. }), "{err:?}");
}
