//! Peer coordination against a real Postgres: the authorization matrix,
//! teardown on workspace deletion and token revocation, two replicas on one
//! database (including one dying), and a pub/sub resync.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use codersdk::coordination::{Coordinator, PeerKind, PeerUpdate};
use coordinator::testutil::TestServer;
use mesh::{mesh_addresses, NodeId};
use tokio::net::TcpStream;
use url::Url;
use uuid::Uuid;

use common::*;

#[tokio::test]
async fn client_and_agent_see_each_other() {
    let srv = TestServer::start().await.unwrap();
    let ((owner_token, _), (member_token, member)) = users(&srv).await;
    let agent = seed_agent(&srv.db.pool, member).await;

    let (_a, mut agent_updates, agent_peer, agent_node) =
        join(&srv.url, &agent.token, PeerKind::Agent, 1).await;
    assert_eq!(agent_peer, agent.id);
    let (c, mut client_updates, client_peer, client_node) =
        join(&srv.url, &member_token, PeerKind::Client, 2).await;
    c.add_tunnel(agent.id);
    expect(&mut client_updates, "agent node", is_node(agent.id, &agent_node)).await;
    expect(&mut agent_updates, "client node", is_node(client_peer, &client_node)).await;

    // A node change reaches the other side.
    let moved = node(client_node.id, 3);
    c.update_node(moved.clone());
    expect(&mut agent_updates, "client's new node", is_node(client_peer, &moved)).await;

    // The single-agent endpoint opens its tunnel implicitly.
    let (_s, mut single_updates, _, _) =
        join(&srv.url, &member_token, PeerKind::SingleAgent(agent.id), 4).await;
    expect(&mut single_updates, "agent node (single)", is_node(agent.id, &agent_node)).await;

    // The debug view is for owners only and shows the state (the store is
    // written behind the fan-out, so it may lag a moment).
    let debug_view = || async {
        reqwest::Client::new()
            .get(srv.url.join("/api/v2/debug/coordinator").unwrap())
            .header("Coder-Session-Token", &owner_token)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let counts = |d: &serde_json::Value| {
        ["replicas", "peers", "tunnels"].map(|k| d[k].as_array().map_or(0, Vec::len))
    };
    let debug = tokio::time::timeout(DEADLINE, async {
        loop {
            let d = debug_view().await;
            if counts(&d) == [1, 3, 2] {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the debug view never showed 1 replica, 3 peers, 2 tunnels"));
    assert_eq!(counts(&debug), [1, 3, 2], "{debug}");
    let status = reqwest::Client::new()
        .get(srv.url.join("/api/v2/debug/coordinator").unwrap())
        .header("Coder-Session-Token", &member_token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);

    // Closing the tunnel tells the agent.
    c.remove_tunnel(agent.id);
    expect(
        &mut agent_updates,
        "client disconnected",
        |u| matches!(u, PeerUpdate::Disconnected { peer, .. } if *peer == client_peer),
    )
    .await;
}

#[tokio::test]
async fn authorization_matrix() {
    let srv = TestServer::start().await.unwrap();
    let ((_, owner), (member_token, member)) = users(&srv).await;
    let owners_agent = seed_agent(&srv.db.pool, owner).await;
    let members_agent = seed_agent(&srv.db.pool, member).await;
    let (_oa, _, _, owners_node) = join(&srv.url, &owners_agent.token, PeerKind::Agent, 1).await;
    let (_ma, _, _, members_node) = join(&srv.url, &members_agent.token, PeerKind::Agent, 2).await;

    // A member's client cannot get another user's agent's node.
    let (c, mut updates, _, _) = join(&srv.url, &member_token, PeerKind::Client, 3).await;
    c.add_tunnel(owners_agent.id);
    c.add_tunnel(members_agent.id);
    let mut refused = false;
    let mut got_own = false;
    tokio::time::timeout(DEADLINE, async {
        while !(refused && got_own) {
            match updates.recv().await.unwrap() {
                PeerUpdate::Refused { peer: Some(p), .. } if p == owners_agent.id => refused = true,
                PeerUpdate::Node { peer, node } => {
                    assert_ne!(peer, owners_agent.id, "leaked a foreign agent's node");
                    assert_eq!(node, members_node);
                    got_own = true;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("refusal and own agent's node");
    let _ = owners_node;
    // ... nor through the single-agent endpoint.
    let err = Coordinator::connect(&srv.url, &member_token, PeerKind::SingleAgent(owners_agent.id))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    // Bad credentials are refused before the upgrade.
    let err = Coordinator::connect(&srv.url, "nope", PeerKind::Agent).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");

    // An agent cannot open a tunnel: refused and closed.
    let (a, mut agent_updates) =
        Coordinator::connect(&srv.url, &members_agent.token, PeerKind::Agent).await.unwrap();
    a.add_tunnel(owners_agent.id);
    let u = expect(&mut agent_updates, "close", |u| {
        matches!(u, PeerUpdate::CoordinatorUnreachable { .. })
    })
    .await;
    assert!(format!("{u:?}").contains("agents may not open tunnels"), "{u:?}");
    drop(a);

    // A peer claiming a foreign node id or address is refused.
    let (a, mut agent_updates) =
        Coordinator::connect(&srv.url, &owners_agent.token, PeerKind::Agent).await.unwrap();
    let PeerUpdate::Connected { node_id, .. } = agent_updates.recv().await.unwrap() else {
        panic!()
    };
    let mut n = node(node_id, 5);
    n.addresses = mesh_addresses(NodeId(node_id.0 ^ 1));
    a.update_node(n);
    let u = expect(&mut agent_updates, "close", |u| {
        matches!(u, PeerUpdate::CoordinatorUnreachable { .. })
    })
    .await;
    assert!(format!("{u:?}").contains("claims"), "{u:?}");
    // The client re-sends that node on every reconnect and is refused each
    // time; its waits must keep doubling (100 + 200 + 400 ms at least before
    // the fourth refusal), not start over at each short-lived session.
    let first = tokio::time::Instant::now();
    for _ in 0..3 {
        expect(&mut agent_updates, "another refusal", |u| {
            matches!(u, PeerUpdate::CoordinatorUnreachable { .. })
        })
        .await;
    }
    let waited = first.elapsed();
    assert!(waited >= Duration::from_millis(700), "refused 3 more times in {waited:?}");
}

/// A server whose periodic re-authorization sweep never comes within a
/// test's deadline: what is torn down, the database's revocation
/// notifications tore down, at once.
async fn events_only() -> TestServer {
    TestServer::start_with(|c| c.coordination.reauthorize_interval = Duration::from_secs(3600))
        .await
        .unwrap()
}

#[tokio::test]
async fn deleted_workspace_and_revoked_token_tear_tunnels_down() {
    let srv = events_only().await;
    let (_, (member_token, member)) = users(&srv).await;
    let agent = seed_agent(&srv.db.pool, member).await;
    let (_a, mut agent_updates, _, agent_node) =
        join(&srv.url, &agent.token, PeerKind::Agent, 1).await;
    let (c, mut client_updates, client_peer, client_node) =
        join(&srv.url, &member_token, PeerKind::Client, 2).await;
    c.add_tunnel(agent.id);
    expect(&mut client_updates, "agent node", is_node(agent.id, &agent_node)).await;
    expect(&mut agent_updates, "client node", is_node(client_peer, &client_node)).await;

    // A second client with a token we then revoke.
    let token = member_login(&srv).await;
    let (c2, mut c2_updates, c2_peer, c2_node) = join(&srv.url, &token, PeerKind::Client, 3).await;
    c2.add_tunnel(agent.id);
    expect(&mut c2_updates, "agent node", is_node(agent.id, &agent_node)).await;
    expect(&mut agent_updates, "second client", is_node(c2_peer, &c2_node)).await;
    let key_id = token.split('-').next().unwrap().to_owned();
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(&key_id)
        .execute(&srv.db.pool)
        .await
        .unwrap();
    expect(
        &mut agent_updates,
        "revoked client disconnected",
        |u| matches!(u, PeerUpdate::Disconnected { peer, .. } if *peer == c2_peer),
    )
    .await;

    // Deleting the workspace removes the agent and its tunnels.
    sqlx::query("UPDATE workspaces SET deleted = true WHERE id = $1")
        .bind(agent.workspace)
        .execute(&srv.db.pool)
        .await
        .unwrap();
    // The client is told the agent is gone and, in either order, that its
    // tunnel to it was revoked.
    let (mut gone, mut revoked) = (false, false);
    tokio::time::timeout(DEADLINE, async {
        while !(gone && revoked) {
            match client_updates.recv().await.unwrap() {
                PeerUpdate::Disconnected { peer, .. } if peer == agent.id => gone = true,
                PeerUpdate::Refused { peer: Some(p), .. } if p == agent.id => revoked = true,
                _ => {}
            }
        }
    })
    .await
    .expect("agent disconnected and tunnel revoked");
    tokio::time::timeout(DEADLINE, async {
        loop {
            let tunnels: i64 = sqlx::query_scalar("SELECT count(*) FROM tunnels WHERE dst = $1")
                .bind(agent.id)
                .fetch_one(&srv.db.pool)
                .await
                .unwrap();
            if tunnels == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the tunnel row is removed");
    // The agent's token is dead with its workspace: its client gives up.
    tokio::time::timeout(DEADLINE, async { while agent_updates.recv().await.is_some() {} })
        .await
        .expect("the agent's update stream ends");
}

#[tokio::test]
async fn two_replicas_and_one_dies() {
    let a = TestServer::start().await.unwrap();
    let (_, (member_token, member)) = users(&a).await;
    let agent = seed_agent(&a.db.pool, member).await;
    let b = replica(&a.db.pool).await;
    let (lb, backend, _lb_task) = balancer(addr(&b.url)).await;

    // Agent on A, client (through the balancer) on B.
    let (_ag, mut agent_updates, _, agent_node) =
        join(&a.url, &agent.token, PeerKind::Agent, 1).await;
    let (c, mut client_updates, client_peer, client_node) =
        join(&lb, &member_token, PeerKind::Client, 2).await;
    c.add_tunnel(agent.id);
    expect(&mut client_updates, "agent node across replicas", is_node(agent.id, &agent_node)).await;
    expect(&mut agent_updates, "client node across replicas", is_node(client_peer, &client_node))
        .await;
    let replicas: i64 = sqlx::query_scalar("SELECT count(*) FROM coordinators")
        .fetch_one(&a.db.pool)
        .await
        .unwrap();
    assert_eq!(replicas, 2);

    // B dies: the client notices, A marks B's peers lost.
    drop(b);
    expect(&mut client_updates, "coordinator gone", |u| {
        matches!(u, PeerUpdate::CoordinatorUnreachable { .. })
    })
    .await;
    expect(
        &mut agent_updates,
        "client lost",
        |u| matches!(u, PeerUpdate::Lost { peer } if *peer == client_peer),
    )
    .await;
    let status: String = sqlx::query_scalar("SELECT status FROM peers WHERE id = $1")
        .bind(client_peer)
        .fetch_one(&a.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "lost");

    // The balancer now sends it to A; it resumes its peer id and tunnels.
    *backend.lock().unwrap() = addr(&a.url);
    let u =
        expect(&mut client_updates, "reconnected", |u| matches!(u, PeerUpdate::Connected { .. }))
            .await;
    assert!(matches!(u, PeerUpdate::Connected { peer_id, .. } if peer_id == client_peer), "{u:?}");
    expect(&mut client_updates, "agent node again", is_node(agent.id, &agent_node)).await;
    expect(&mut agent_updates, "client back", is_node(client_peer, &client_node)).await;
}

#[tokio::test]
async fn updates_flow_after_pubsub_reconnect() {
    let a = TestServer::start().await.unwrap();
    let (_, (member_token, member)) = users(&a).await;
    let agent = seed_agent(&a.db.pool, member).await;
    let b = replica(&a.db.pool).await;
    let (_ag, mut agent_updates, _, agent_node) =
        join(&a.url, &agent.token, PeerKind::Agent, 1).await;
    let (c, mut client_updates, client_peer, client_node) =
        join(&b.url, &member_token, PeerKind::Client, 2).await;
    c.add_tunnel(agent.id);
    expect(&mut client_updates, "agent node", is_node(agent.id, &agent_node)).await;
    expect(&mut agent_updates, "client node", is_node(client_peer, &client_node)).await;

    // A change written behind the replicas' backs, with no NOTIFY: as if it
    // were announced while the listeners were away. Only a resync finds it.
    let (ghost, ghost_replica) = (Uuid::new_v4(), Uuid::new_v4());
    let ghost_node = node(coordinator::coordination::node_id(ghost), 11);
    sqlx::query("INSERT INTO coordinators (id) VALUES ($1)")
        .bind(ghost_replica)
        .execute(&a.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO peers (id, coordinator_id, kind, owner_id, node) VALUES ($1, $2, 'client', $3, $4)",
    )
    .bind(ghost)
    .bind(ghost_replica)
    .bind(member)
    .bind(serde_json::to_value(&ghost_node).unwrap())
    .execute(&a.db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO tunnels (src, dst, coordinator_id) VALUES ($1, $2, $3)")
        .bind(ghost)
        .bind(agent.id)
        .bind(ghost_replica)
        .execute(&a.db.pool)
        .await
        .unwrap();

    // Kill every pub/sub listener connection (as a Postgres restart would).
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&a.db.pool)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "no listener connections found");

    expect(
        &mut agent_updates,
        "the unannounced peer, found by the resync",
        is_node(ghost, &ghost_node),
    )
    .await;

    // Changes made right away (possibly missed by NOTIFY) still arrive.
    let moved = node(client_node.id, 9);
    c.update_node(moved.clone());
    expect(&mut agent_updates, "client's new node after resync", is_node(client_peer, &moved))
        .await;
    let agent_moved = node(agent_node.id, 10);
    _ag.update_node(agent_moved.clone());
    expect(&mut client_updates, "agent's new node after resync", is_node(agent.id, &agent_moved))
        .await;
}

/// Opens a raw coordination WebSocket as an agent.
async fn raw_agent(url: &Url, token: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut ws_url = url.join("/api/v2/workspaceagents/me/coordinate?version=1").unwrap();
    ws_url.set_scheme("ws").unwrap();
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("Coder-Session-Token", token.parse().unwrap());
    let tcp = TcpStream::connect(addr(url)).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await.unwrap().0
}

/// Waits for the server to close the socket because its credentials were revoked.
async fn closed_as_revoked(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) {
    let (code, reason) = close_of(ws).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("credentials revoked"), "{reason}");
}

/// Reads until the server closes; returns its close code and reason.
async fn close_of(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> (u16, String) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    return (u16::from(f.code), f.reason.to_string())
                }
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("close frame")
}

#[tokio::test]
async fn malformed_and_oversized_messages_close_with_a_reason() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let srv = TestServer::start().await.unwrap();
    let (_, (_, member)) = users(&srv).await;
    let agent = seed_agent(&srv.db.pool, member).await;

    let mut ws = raw_agent(&srv.url, &agent.token).await;
    ws.send(Message::text(r#"{"type":"teleport"}"#)).await.unwrap();
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1007);
    assert!(reason.starts_with("malformed message"), "{reason}");

    let mut ws = raw_agent(&srv.url, &agent.token).await;
    let big = format!(r#"{{"type":"node","pad":"{}"}}"#, "x".repeat(70 * 1024));
    let _ = ws.send(Message::text(big)).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");

    // An unknown protocol version is refused before the upgrade.
    let resp = reqwest::Client::new()
        .get(srv.url.join("/api/v2/workspaceagents/me/coordinate?version=2").unwrap())
        .header("Coder-Session-Token", &agent.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
}

/// Opens a raw coordination WebSocket at `path` (with its query) with `token`;
/// the HTTP status on refusal.
async fn raw_ws(
    url: &Url,
    path: &str,
    token: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Error;
    let mut ws_url = url.join(path).unwrap();
    ws_url.set_scheme("ws").unwrap();
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("Coder-Session-Token", token.parse().unwrap());
    let tcp = TcpStream::connect(addr(url)).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// `token` with the last character of its secret changed.
fn tampered(token: &str) -> String {
    let mut t = token.to_owned();
    let last = t.pop().unwrap();
    t.push(if last == 'a' { 'b' } else { 'a' });
    t
}

#[tokio::test]
async fn revoked_expired_tampered_and_misused_credentials_on_coordination() {
    let srv = events_only().await;
    let (_, (member_token, member)) = users(&srv).await;
    let agent = seed_agent(&srv.db.pool, member).await;
    let tailnet = "/api/v2/tailnet?version=1";
    let single = format!("/api/v2/workspaceagents/{}/coordinate?version=1", agent.id);
    let agent_path = "/api/v2/workspaceagents/me/coordinate?version=1";

    // An open socket is closed (1008) once its token is revoked, or expires.
    let key_id = |t: &str| t.split('-').next().unwrap().to_owned();
    let revoked = member_login(&srv).await;
    let mut ws = raw_ws(&srv.url, tailnet, &revoked).await.unwrap();
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(key_id(&revoked))
        .execute(&srv.db.pool)
        .await
        .unwrap();
    closed_as_revoked(&mut ws).await;
    let expiring = member_login(&srv).await;
    let mut ws = raw_ws(&srv.url, &single, &expiring).await.unwrap();
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(key_id(&expiring))
        .execute(&srv.db.pool)
        .await
        .unwrap();
    assert_eq!(close_of(&mut ws).await.0, 1008);
    // Neither token opens a socket again.
    for token in [&revoked, &expiring] {
        assert_eq!(raw_ws(&srv.url, tailnet, token).await.err(), Some(401));
    }

    // Tampered tokens: refused before the upgrade, on every endpoint.
    for path in [tailnet, &single] {
        assert_eq!(
            raw_ws(&srv.url, path, &tampered(&member_token)).await.err(),
            Some(401),
            "{path}"
        );
    }
    assert_eq!(raw_ws(&srv.url, agent_path, &tampered(&agent.token)).await.err(), Some(401));

    // Each credential works only where it belongs: an agent token is no
    // user session (so it can open no client tunnel), and a session is no agent.
    for path in [tailnet, &single] {
        assert_eq!(raw_ws(&srv.url, path, &agent.token).await.err(), Some(401), "{path}");
    }
    assert_eq!(raw_ws(&srv.url, agent_path, &member_token).await.err(), Some(401));
    let me = srv.client().with_token(agent.token.clone()).me().await.unwrap_err();
    assert_eq!(me.status(), Some(reqwest::StatusCode::UNAUTHORIZED));
    // The untouched credentials still work.
    raw_ws(&srv.url, agent_path, &agent.token).await.unwrap();
    raw_ws(&srv.url, tailnet, &member_token).await.unwrap();
}

/// What no notification announces (a key that simply runs out; a change
/// whose notification was missed, here because its trigger is gone) the
/// periodic sweep still catches.
#[tokio::test]
async fn the_periodic_sweep_closes_what_no_event_announced() {
    let srv = TestServer::start_with(|c| {
        c.coordination.reauthorize_interval = Duration::from_millis(200);
    })
    .await
    .unwrap();
    let (_, (_, member)) = users(&srv).await;
    for trigger in [
        "api_keys_shortened_coordination ON api_keys",
        "workspaces_changed_coordination ON workspaces",
    ] {
        sqlx::query(&format!("DROP TRIGGER {trigger}")).execute(&srv.db.pool).await.unwrap();
    }
    let expiring = member_login(&srv).await;
    let mut ws = raw_ws(&srv.url, "/api/v2/tailnet?version=1", &expiring).await.unwrap();
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(expiring.split('-').next().unwrap())
        .execute(&srv.db.pool)
        .await
        .unwrap();
    closed_as_revoked(&mut ws).await;

    let agent = seed_agent(&srv.db.pool, member).await;
    let mut ws = raw_agent(&srv.url, &agent.token).await;
    sqlx::query("UPDATE workspaces SET deleted = true WHERE id = $1")
        .bind(agent.workspace)
        .execute(&srv.db.pool)
        .await
        .unwrap();
    assert_eq!(close_of(&mut ws).await.0, 1008);
}

#[tokio::test]
async fn another_users_agent_is_invisible_through_the_api() {
    let srv = TestServer::start().await.unwrap();
    let ((owner_token, owner), (member_token, member)) = users(&srv).await;
    let owners_agent = seed_agent(&srv.db.pool, owner).await;
    let members_agent = seed_agent(&srv.db.pool, member).await;
    let as_member = srv.client().with_token(member_token);
    let as_owner = srv.client().with_token(owner_token);

    // The member sees its own agent's logs and metadata, and nothing of the
    // owner's: the same 404 as for an agent that does not exist.
    as_member.agent_logs(members_agent.id).await.unwrap();
    as_member.agent_metadata(members_agent.id).await.unwrap();
    for id in [owners_agent.id, Uuid::new_v4()] {
        let logs = as_member.agent_logs(id).await.unwrap_err();
        assert_eq!(logs.status(), Some(reqwest::StatusCode::NOT_FOUND), "{logs}");
        let metadata = as_member.agent_metadata(id).await.unwrap_err();
        assert_eq!(metadata.status(), Some(reqwest::StatusCode::NOT_FOUND), "{metadata}");
    }
    let err = as_member.workspace(owners_agent.workspace).await.unwrap_err();
    assert_eq!(err.status(), Some(reqwest::StatusCode::NOT_FOUND), "{err}");
    // The owner role reaches both.
    as_owner.agent_logs(members_agent.id).await.unwrap();
    as_owner.workspace(members_agent.workspace).await.unwrap();
}
