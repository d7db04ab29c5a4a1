//! Postgres restarts under two coordinating replicas (a cluster of this
//! test's own, stopped with `pg_ctl stop -m fast` and started again) while
//! peers are connected and a mesh stream carries data.
//!
//! Asserts: the API fails during the outage and answers again after it; the
//! mesh stream between an agent on replica A and a client on replica B keeps
//! flowing through the outage (bytes arrive while Postgres is down) and ends
//! SHA-256-equal; peers on one replica keep exchanging news during the
//! outage; both replicas LISTEN again; node updates made after the restart
//! cross replicas both ways; peers that left during the outage are reported
//! disconnected and their rows gone, never announced as alive again; no
//! replica declares another dead because the outage made every heartbeat
//! stale (no `Lost`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codersdk::coordination::{PeerKind, PeerUpdate, PeerUpdates};
use codersdk::meshnet::{MeshSession, SessionConfig};
use coordinator::testutil::{DedicatedCluster, TestServer};
use mesh::Service;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use common::*;

/// Longer than the heartbeat timeout (6 s): every replica's heartbeat goes
/// stale, as in a real restart that takes a while.
const OUTAGE: Duration = Duration::from_secs(8);

/// Waits until the API answers `GET /users/me` with 200; returns how long it took.
async fn api_back(srv: &TestServer, token: &str) -> Duration {
    let started = Instant::now();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let url = srv.url.join("/api/v2/users/me").unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let r = http.get(url.clone()).header("Coder-Session-Token", token).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the API did not recover within 60 s")
}

/// Everything the peer has been told so far, without waiting.
fn drained(updates: &mut PeerUpdates) -> Vec<PeerUpdate> {
    use futures::FutureExt;
    std::iter::from_fn(|| updates.recv().now_or_never().flatten()).collect()
}

/// Streams paced chunks of a seeded pseudo-random sequence until `stop`;
/// returns what was sent and its SHA-256.
async fn send_until(
    mut send: quinn::SendStream,
    mut stop: watch::Receiver<bool>,
) -> (u64, [u8; 32]) {
    let mut hash = Sha256::new();
    let mut sent = 0u64;
    let mut chunk = vec![0u8; 32 * 1024];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    while !*stop.borrow_and_update() {
        for b in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        send.write_all(&chunk).await.expect("the mesh stream broke");
        hash.update(&chunk);
        sent += chunk.len() as u64;
        tokio::select! {
            _ = pace.tick() => {}
            _ = stop.changed() => {}
        }
    }
    send.finish().unwrap();
    (sent, hash.finalize().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordination_recovers_from_a_postgres_restart() {
    let pg = DedicatedCluster::start().await.unwrap();
    let a = TestServer::start_on(pg.database("coder").await.unwrap()).await.unwrap();
    let (_, (member_token, member)) = users(&a).await;
    let mesh_agent = seed_agent(&a.db.pool, member).await;
    let agent = seed_agent(&a.db.pool, member).await;
    let b_pool = coordinator::connect_db(a.db.options.clone(), 10).await.unwrap();
    let b = replica(&b_pool).await;

    // The mesh: an agent on A, a client on B, one stream of bulk data.
    let map = a.state.relay_map.current();
    let agent_session = MeshSession::join(
        &a.url,
        &mesh_agent.token,
        PeerKind::Agent,
        &map,
        SessionConfig::default(),
    )
    .await
    .unwrap();
    let client_session =
        MeshSession::join(&b.url, &member_token, PeerKind::Client, &map, SessionConfig::default())
            .await
            .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let sink = tokio::spawn(async move {
        let conn = agent_session.endpoint().accept().await.unwrap();
        let (service, _send, mut recv) = conn.accept().await.unwrap();
        assert_eq!(service, Service::Speedtest);
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Some(n) = recv.read(&mut buf).await.expect("the mesh stream broke") {
            hash.update(&buf[..n]);
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        let digest: [u8; 32] = hash.finalize().into();
        (counter.load(Ordering::Relaxed), digest)
    });
    let conn = client_session.dial_agent(mesh_agent.id, DEADLINE).await.unwrap();
    let (send, _recv) = conn.open(Service::Speedtest).await.unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let source = tokio::spawn(send_until(send, stop_rx));

    // Coordination: an agent on A; a client on B that stays; one on A and
    // one on B that leave while Postgres is down; one on A that stays.
    let (agent_c, mut agent_updates, _, agent_node) =
        join(&a.url, &agent.token, PeerKind::Agent, 1).await;
    let mut clients = Vec::new();
    for (url, port) in [(&b.url, 2), (&a.url, 3), (&b.url, 4), (&a.url, 5)] {
        let (c, mut updates, peer, node) = join(url, &member_token, PeerKind::Client, port).await;
        c.add_tunnel(agent.id);
        expect(&mut updates, "agent node", is_node(agent.id, &agent_node)).await;
        expect(&mut agent_updates, "client node", is_node(peer, &node)).await;
        clients.push((c, updates, peer, node));
    }
    let mut clients = clients.into_iter();
    let (stay_b, mut stay_b_updates, stay_b_peer, _) = clients.next().unwrap();
    let (leave_a, _, leave_a_peer, _) = clients.next().unwrap();
    let (leave_b, _, leave_b_peer, _) = clients.next().unwrap();
    let (_stay_a, mut stay_a_updates, _, _) = clients.next().unwrap();
    let flowing = received.load(Ordering::Relaxed);
    assert!(flowing > 0, "no data before the restart");

    // Postgres goes away.
    pg.stop().await.unwrap();
    let down_at = received.load(Ordering::Relaxed);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let during = http
        .get(a.url.join("/api/v2/users/me").unwrap())
        .header("Coder-Session-Token", &member_token)
        .send()
        .await;
    assert!(
        during.as_ref().map_or(true, |r| !r.status().is_success()),
        "the API answered with Postgres down: {during:?}"
    );
    // Peers leave; the one on the agent's replica is reported at once, and
    // a node change on A reaches A's other client: the replica does not wait
    // on the database to fan out.
    drop(leave_a);
    drop(leave_b);
    expect(
        &mut agent_updates,
        "local client disconnected during the outage",
        |u| matches!(u, PeerUpdate::Disconnected { peer, .. } if *peer == leave_a_peer),
    )
    .await;
    let moved_in_outage = node(agent_node.id, 6);
    agent_c.update_node(moved_in_outage.clone());
    expect(
        &mut stay_a_updates,
        "agent's node change during the outage",
        is_node(agent.id, &moved_in_outage),
    )
    .await;
    tokio::time::sleep(OUTAGE).await;
    let during_outage = received.load(Ordering::Relaxed) - down_at;
    pg.restart().await.unwrap();

    // The API recovers.
    let took = api_back(&a, &member_token).await;
    eprintln!("API answered {took:?} after Postgres was back");

    // Both replicas LISTEN again.
    tokio::time::timeout(DEADLINE, async {
        loop {
            let listening: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            )
            .fetch_one(&a.db.pool)
            .await
            .unwrap_or(0);
            if listening >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("both replicas listen again");

    // The peer that left on B is reported on A too, and the rows of both
    // leavers are gone.
    expect(
        &mut agent_updates,
        "remote client disconnected after the outage",
        |u| matches!(u, PeerUpdate::Disconnected { peer, .. } if *peer == leave_b_peer),
    )
    .await;
    tokio::time::timeout(DEADLINE, async {
        loop {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM peers WHERE id = ANY($1)")
                .bind(vec![leave_a_peer, leave_b_peer])
                .fetch_one(&a.db.pool)
                .await
                .unwrap();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the leavers' rows are removed");

    // Updates made after the restart cross replicas, both ways.
    let moved = node(agent_node.id, 7);
    agent_c.update_node(moved.clone());
    expect(&mut stay_b_updates, "agent's node after the restart", is_node(agent.id, &moved)).await;
    let stay_moved = node(coordinator::coordination::node_id(stay_b_peer), 8);
    stay_b.update_node(stay_moved.clone());
    expect(
        &mut agent_updates,
        "client's node after the restart",
        is_node(stay_b_peer, &stay_moved),
    )
    .await;

    // Nothing stale was announced in between: no leaver came back, and no
    // replica declared the other dead.
    let later = drained(&mut agent_updates);
    for u in &later {
        match u {
            PeerUpdate::Node { peer, .. } => {
                assert!(![leave_a_peer, leave_b_peer].contains(peer), "a leaver announced: {u:?}");
            }
            PeerUpdate::Lost { peer } => panic!("{peer} announced lost after the restart"),
            _ => {}
        }
    }
    for u in drained(&mut stay_b_updates) {
        assert!(!matches!(u, PeerUpdate::Lost { .. }), "{u:?}");
    }
    let debug = coordinator::coordination::debug_snapshot(&a.db.pool).await.unwrap();
    assert_eq!(debug.replicas.len(), 2, "{debug:?}");
    assert!(debug.peers.iter().all(|p| p.status == "ok"), "{debug:?}");

    // The mesh stream flowed through the outage and lost nothing.
    let _ = stop.send(true);
    let (sent, sent_hash) = source.await.unwrap();
    let (got, got_hash) = tokio::time::timeout(DEADLINE, sink).await.unwrap().unwrap();
    eprintln!("mesh stream: {sent} bytes, {during_outage} of them while Postgres was down");
    assert!(during_outage > 0, "no data flowed while Postgres was down");
    assert_eq!(got, sent);
    assert_eq!(hex::encode(got_hash), hex::encode(sent_hash));
    drop(conn);
    drop(client_session);
}
