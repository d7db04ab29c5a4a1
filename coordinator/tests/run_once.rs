//! Work that must run once across replicas, on one real Postgres.
//!
//! *Stale-job sweep*: every replica runs the detector; two replicas (each
//! its own connection pool, as two `coderd` processes have) sweep the same
//! stale jobs at the same instant, round after round. Each job must be
//! failed by exactly one of them and announced once: the sweep is one
//! `UPDATE … WHERE completed_at IS NULL … RETURNING`, so the row lock makes
//! the loser's re-check skip what the winner just failed.
//!
//! *Revocation sweep*: keyed by replica. Every replica hears the database's
//! revocation notice and sweeps, but only over its own connections, so a
//! revoked client is closed by the replica it is on, once, and its agent on
//! the other replica hears one `disconnected`, not two.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use codersdk::coordination::{PeerKind, PeerUpdate};
use coordinator::provisionerd::queue::CHANNEL_JOB_LOGS;
use coordinator::provisionerd::{Queue, Tags};
use coordinator::pubsub::{Message, Pubsub};
use coordinator::testutil::{self, TestServer};
use uuid::Uuid;

use common::{expect, is_node, join, member_login, replica, seed_agent, users, DEADLINE};

const JOBS: usize = 24;
const ROUNDS: usize = 4;

/// Enqueues `n` template imports and makes each look taken by a worker that
/// stopped heartbeating an hour ago.
async fn stale_jobs(srv: &TestServer, owner: Uuid, n: usize) -> HashSet<Uuid> {
    let file_id = testutil::empty_file(&srv.db.pool, owner).await.unwrap();
    let mut jobs = HashSet::new();
    for _ in 0..n {
        jobs.insert(
            testutil::enqueue_import(&srv.db.pool, file_id, owner, Tags::new()).await.unwrap(),
        );
    }
    sqlx::query(
        "UPDATE provisioner_jobs SET worker_id = 'gone', started_at = now() - interval '1 hour',
             heartbeat_at = now() - interval '1 hour'
         WHERE id = ANY($1)",
    )
    .bind(jobs.iter().copied().collect::<Vec<_>>())
    .execute(&srv.db.pool)
    .await
    .unwrap();
    jobs
}

/// One replica's queue: its own pool and pub/sub, as another process has.
async fn replica_queue(srv: &TestServer) -> Queue {
    let pool = coordinator::connect_db(srv.db.options.clone(), 4).await.unwrap();
    Queue::new(pool.clone(), Pubsub::new(pool))
}

#[tokio::test]
async fn two_replicas_fail_each_stale_job_once() {
    let srv = TestServer::start().await.unwrap();
    let (a, b) = (replica_queue(&srv).await, replica_queue(&srv).await);
    let listener = Pubsub::new(srv.db.pool.clone());
    let mut notices = listener.subscribe(CHANNEL_JOB_LOGS).await;

    let owner = srv.owner().await.unwrap().me().await.unwrap().id;
    let mut all = HashSet::new();
    for round in 0..ROUNDS {
        let jobs = stale_jobs(&srv, owner, JOBS).await;
        let timeout = Duration::from_secs(60);
        let (by_a, by_b) = tokio::join!(a.fail_stale(timeout), b.fail_stale(timeout));
        let (by_a, by_b): (HashSet<Uuid>, HashSet<Uuid>) =
            (by_a.unwrap().into_iter().collect(), by_b.unwrap().into_iter().collect());
        assert!(
            by_a.is_disjoint(&by_b),
            "round {round}: both replicas failed {:?}",
            by_a.intersection(&by_b).collect::<Vec<_>>()
        );
        let union: HashSet<Uuid> = by_a.union(&by_b).copied().collect();
        assert_eq!(union, jobs, "round {round}: every stale job is failed");
        all.extend(jobs);
    }
    // Nothing is left for a later sweep of either replica.
    assert!(a.fail_stale(Duration::from_secs(60)).await.unwrap().is_empty());
    assert!(b.fail_stale(Duration::from_secs(60)).await.unwrap().is_empty());
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM provisioner_jobs WHERE id = ANY($1) AND error_code = 'worker_lost'
             AND completed_at IS NOT NULL",
    )
    .bind(all.iter().copied().collect::<Vec<_>>())
    .fetch_one(&srv.db.pool)
    .await
    .unwrap();
    assert_eq!(failed as usize, all.len());

    // Each job was announced once: count the notices up to a marker sent
    // after every sweep returned (one listening connection keeps their order).
    let marker = Uuid::new_v4().to_string();
    listener.publish(CHANNEL_JOB_LOGS, &marker).await.unwrap();
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            match notices.recv().await.unwrap() {
                Message::Payload(p) if p == marker => break,
                Message::Payload(p) => *seen.entry(p.parse().unwrap()).or_default() += 1,
                // The listener's first connection announces itself so.
                Message::Resync => {}
            }
        }
    })
    .await
    .expect("the marker notice");
    assert_eq!(seen.keys().copied().collect::<HashSet<_>>(), all);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "announced more than once: {twice:?}");
}

#[tokio::test]
async fn a_revocation_is_acted_on_once_by_the_replica_holding_the_connection() {
    let a = TestServer::start_with(|c| {
        c.coordination.reauthorize_interval = Duration::from_secs(3600);
    })
    .await
    .unwrap();
    let (_, (_, member)) = users(&a).await;
    let agent = seed_agent(&a.db.pool, member).await;
    // Replica B: its own run loop and sweeps (the default interval, 3 s).
    let b = replica(&a.db.pool).await;

    // The agent on A; a client that will be revoked on B; a bystander
    // client of the same user on A.
    let (_ag, mut agent_updates, _, agent_node) =
        join(&a.url, &agent.token, PeerKind::Agent, 1).await;
    let revoked = member_login(&a).await;
    let (c, mut c_updates, c_peer, c_node) = join(&b.url, &revoked, PeerKind::Client, 2).await;
    c.add_tunnel(agent.id);
    let bystander = member_login(&a).await;
    let (d, mut d_updates, d_peer, d_node) = join(&a.url, &bystander, PeerKind::Client, 3).await;
    d.add_tunnel(agent.id);
    expect(&mut c_updates, "agent node on B", is_node(agent.id, &agent_node)).await;
    expect(&mut d_updates, "agent node on A", is_node(agent.id, &agent_node)).await;
    expect(&mut agent_updates, "client on B", is_node(c_peer, &c_node)).await;
    expect(&mut agent_updates, "client on A", is_node(d_peer, &d_node)).await;

    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(revoked.split('-').next().unwrap())
        .execute(&a.db.pool)
        .await
        .unwrap();
    expect(
        &mut agent_updates,
        "the revoked client disconnected",
        |u| matches!(u, PeerUpdate::Disconnected { peer, .. } if *peer == c_peer),
    )
    .await;
    // A second revocation notice makes both replicas sweep again.
    let other = member_login(&a).await;
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(other.split('-').next().unwrap())
        .execute(&a.db.pool)
        .await
        .unwrap();
    // Then a marker: the bystander publishes a new node, which reaches the
    // agent after anything either sweep sent it.
    let moved = common::node(d_node.id, 33);
    d.update_node(moved.clone());
    let mut between = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let u = agent_updates.recv().await.expect("update stream ended");
            if is_node(d_peer, &moved)(&u) {
                break;
            }
            between.push(u);
        }
    })
    .await
    .expect("the bystander's new node");
    let again: Vec<_> = between
        .iter()
        .filter(|u| {
            matches!(u, PeerUpdate::Disconnected { peer, .. } | PeerUpdate::Lost { peer, .. } if *peer == c_peer)
        })
        .collect();
    assert!(again.is_empty(), "the revoked client was torn down again: {again:?}");
    let gone: i64 = sqlx::query_scalar("SELECT count(*) FROM peers WHERE id = $1")
        .bind(c_peer)
        .fetch_one(&a.db.pool)
        .await
        .unwrap();
    assert_eq!(gone, 0, "the revoked client's row is deleted");
    // The bystander on the other replica is untouched, and so is the agent.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM peers WHERE id = ANY($1)")
        .bind(vec![d_peer, agent.id])
        .fetch_one(&a.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
}
