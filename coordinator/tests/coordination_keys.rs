//! Key binding against a real Postgres: a peer announcing another peer's
//! node, disco or QUIC key is refused (on the victim's replica, and through
//! the database's unique indexes when the other replica could not know), the
//! victim's node as its peers see it is unchanged, and a connection cannot
//! change its keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use codersdk::coordination::{Coordinator, PeerKind, PeerUpdate, PeerUpdates};
use coordinator::testutil::TestServer;
use mesh::{KeyKind, Node};
use url::Url;
use uuid::Uuid;

use common::*;

/// Connects as the agent with `token` and announces `spoof(assigned node)`;
/// returns the close reason the coordinator answered with.
async fn announce(url: &Url, token: &str, spoof: impl FnOnce(&mut Node)) -> String {
    let (c, mut updates) = Coordinator::connect(url, token, PeerKind::Agent).await.unwrap();
    let PeerUpdate::Connected { node_id, .. } = updates.recv().await.unwrap() else {
        panic!("first update is not Connected");
    };
    let mut n = node(node_id, 7);
    spoof(&mut n);
    c.update_node(n);
    let u = expect(&mut updates, "the refusal", |u| {
        matches!(u, PeerUpdate::CoordinatorUnreachable { .. })
    })
    .await;
    format!("{u:?}")
}

fn take(kind: KeyKind, victim: &Node) -> impl FnOnce(&mut Node) + '_ {
    move |n| match kind {
        KeyKind::Node => n.key = victim.key,
        KeyKind::Disco => n.disco_key = victim.disco_key,
        _ => n.quic_key = victim.quic_key,
    }
}

/// Every update so far, without waiting.
fn pending(updates: &mut PeerUpdates) -> Vec<PeerUpdate> {
    use futures::{FutureExt, StreamExt};
    std::iter::from_fn(|| updates.next().now_or_never().flatten()).collect()
}

#[tokio::test]
async fn another_agents_keys_are_refused_and_its_node_unchanged() {
    let srv = TestServer::start().await.unwrap();
    let ((owner_token, owner), (_, member)) = users(&srv).await;
    let victim = seed_agent(&srv.db.pool, member).await;
    let mallory = seed_agent(&srv.db.pool, owner).await;
    // (Dropping the update stream would end the victim's connection.)
    let (_v, _victim_updates, _, victim_node) =
        join(&srv.url, &victim.token, PeerKind::Agent, 1).await;
    // A client (like coderd's own peer) that may reach both agents.
    let (c, mut seen, _, _) = join(&srv.url, &owner_token, PeerKind::Client, 2).await;
    c.add_tunnel(victim.id);
    c.add_tunnel(mallory.id);
    expect(&mut seen, "victim's node", is_node(victim.id, &victim_node)).await;

    for kind in [KeyKind::Node, KeyKind::Disco, KeyKind::Quic] {
        let reason = announce(&srv.url, &mallory.token, take(kind, &victim_node)).await;
        assert!(reason.contains("already announced by another peer"), "{kind}: {reason}");
        assert!(reason.contains(&format!("{kind} key")), "{kind}: {reason}");
    }
    // Mallory with keys of its own is welcome, and the client hears of it.
    let (_m, _mallory_updates, _, mallory_node) =
        join(&srv.url, &mallory.token, PeerKind::Agent, 3).await;
    expect(&mut seen, "mallory's own node", is_node(mallory.id, &mallory_node)).await;
    // The client never saw any node carrying the victim's keys but the victim's.
    for u in pending(&mut seen) {
        if let PeerUpdate::Node { peer, node } = &u {
            let shares = node.key == victim_node.key
                || node.disco_key == victim_node.disco_key
                || node.quic_key == victim_node.quic_key;
            assert!(!shares || (*peer == victim.id && *node == victim_node), "{u:?}");
        }
    }
    let stored: serde_json::Value = sqlx::query_scalar("SELECT node FROM peers WHERE id = $1")
        .bind(victim.id)
        .fetch_one(&srv.db.pool)
        .await
        .unwrap();
    assert_eq!(serde_json::from_value::<Node>(stored).unwrap(), victim_node);
}

#[tokio::test]
async fn a_key_held_on_another_replica_is_refused_by_the_database() {
    let a = TestServer::start().await.unwrap();
    let ((_, owner), _) = users(&a).await;
    let mallory = seed_agent(&a.db.pool, owner).await;
    // A peer of another replica, written without a notification: no replica's
    // view has it, only the database.
    let (ghost, ghost_replica) = (Uuid::new_v4(), Uuid::new_v4());
    let ghost_node = node(coordinator::coordination::node_id(ghost), 11);
    sqlx::query("INSERT INTO coordinators (id) VALUES ($1)")
        .bind(ghost_replica)
        .execute(&a.db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO peers (id, coordinator_id, kind, node) VALUES ($1, $2, 'agent', $3)")
        .bind(ghost)
        .bind(ghost_replica)
        .bind(serde_json::to_value(&ghost_node).unwrap())
        .execute(&a.db.pool)
        .await
        .unwrap();
    let b = replica(&a.db.pool).await;
    for kind in [KeyKind::Node, KeyKind::Disco, KeyKind::Quic] {
        let reason = announce(&b.url, &mallory.token, take(kind, &ghost_node)).await;
        assert!(reason.contains(&format!("{kind} key")), "{kind}: {reason}");
        assert!(reason.contains("already announced by another peer"), "{kind}: {reason}");
    }
    let holders: i64 = sqlx::query_scalar("SELECT count(*) FROM peers WHERE node->>'key' = $1")
        .bind(ghost_node.key.to_string())
        .fetch_one(&a.db.pool)
        .await
        .unwrap();
    assert_eq!(holders, 1);
}

#[tokio::test]
async fn a_connection_cannot_change_its_keys() {
    let srv = TestServer::start().await.unwrap();
    let ((owner_token, _), (_, member)) = users(&srv).await;
    let agent = seed_agent(&srv.db.pool, member).await;
    let (a, mut agent_updates, _, agent_node) =
        join(&srv.url, &agent.token, PeerKind::Agent, 1).await;
    let (c, mut seen, _, _) = join(&srv.url, &owner_token, PeerKind::Client, 2).await;
    c.add_tunnel(agent.id);
    expect(&mut seen, "agent's node", is_node(agent.id, &agent_node)).await;

    // New endpoints with the same keys: fine.
    let mut moved = agent_node.clone();
    moved.endpoints = vec!["192.0.2.1:99".parse().unwrap()];
    a.update_node(moved.clone());
    expect(&mut seen, "agent's moved node", is_node(agent.id, &moved)).await;
    // A new disco key on the same connection: refused.
    let mut rotated = moved.clone();
    rotated.disco_key = node(mesh::NodeId(4242), 1).disco_key;
    a.update_node(rotated.clone());
    let u = expect(&mut agent_updates, "the refusal", |u| {
        matches!(u, PeerUpdate::CoordinatorUnreachable { .. })
    })
    .await;
    assert!(format!("{u:?}").contains("keys are fixed"), "{u:?}");
    // The client reconnects and announces the new keys on its new
    // connection, which is allowed: the client learns them then.
    expect(&mut seen, "agent's new keys", is_node(agent.id, &rotated)).await;
}
