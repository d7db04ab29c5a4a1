//! The relay embedded in coderd: two peers exchange packets through `/derp`
//! (DERP upgrade and WebSocket), and the relay map lists it. Only node keys
//! that a connected coordination peer announced may use it; a `derper`
//! with client verification asks coderd the same question over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use codersdk::coordination::{Coordinator, PeerKind, PeerUpdate};
use coordinator::relay::RelayVerifyKey;
use coordinator::testutil::TestServer;
use derp::client::ConnectError;
use derp::proto::HandshakeError;
use derp::server::{ClientVerifier, UrlVerifier};
use derp::{Client, ClientConfig, RelayUrl, SecretKey, Transport};
use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;
use url::Url;

use common::*;

async fn connect(url: &str, key: &SecretKey, transport: Transport) -> Result<Client, ConnectError> {
    let mut cfg = ClientConfig::new(url.parse::<RelayUrl>().unwrap(), key.clone());
    cfg.transport = transport;
    Client::connect(cfg).await
}

/// Joins coordination as `kind` and announces a node whose key is `key`'s.
async fn announce(url: &Url, token: &str, kind: PeerKind, key: &SecretKey) -> Coordinator {
    let (c, mut updates) = Coordinator::connect(url, token, kind).await.unwrap();
    let Some(PeerUpdate::Connected { node_id, .. }) = updates.recv().await else {
        panic!("first update is not Connected");
    };
    let mut n = node(node_id, 1);
    n.key = mesh::NodeKey::from(key.public());
    c.update_node(n);
    // Keep the update stream alive with the connection.
    tokio::spawn(async move { while updates.recv().await.is_some() {} });
    c
}

fn assert_refused(result: Result<Client, ConnectError>) -> String {
    match result {
        Err(ConnectError::Handshake(HandshakeError::Refused(problem))) => {
            assert!(problem.contains("may not use this relay"), "{problem}");
            problem
        }
        Ok(_) => panic!("the relay admitted a key no connected peer announced"),
        Err(other) => panic!("expected a refusal, got {other}"),
    }
}

/// Waits until `key` is (or is no longer) a connected peer's, on the
/// coordination change notifications.
async fn wait_known(srv: &TestServer, key: &SecretKey, want: bool) {
    let key = mesh::NodeKey::from(key.public());
    let mut changes = coordinator::coordination::peer_changes(&srv.state.pubsub).await;
    tokio::time::timeout(DEADLINE, async {
        loop {
            let known =
                coordinator::coordination::node_key_is_known(&srv.db.pool, &key).await.unwrap();
            if known == want {
                return;
            }
            let _ = changes.recv().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the key never became known = {want}"));
}

fn relay_url(srv: &TestServer) -> String {
    format!("{}derp", srv.url)
}

#[tokio::test]
async fn peers_meet_through_the_embedded_relay() {
    let srv = TestServer::start().await.unwrap();
    let map = srv
        .client()
        .request::<(), codersdk::RelayMap>(reqwest::Method::GET, "/api/v2/derp-map", None)
        .await
        .unwrap();
    let region = &map.regions[&coordinator::relay::EMBEDDED_REGION_ID];
    let url = region.nodes[0].url.clone();
    assert_eq!(url, relay_url(&srv));

    let (_, (member_token, member)) = users(&srv).await;
    let agent = seed_agent(&srv.db.pool, member).await;
    let (akey, bkey) = (SecretKey::generate(), SecretKey::generate());
    let _a = announce(&srv.url, &agent.token, PeerKind::Agent, &akey).await;
    let _b = announce(&srv.url, &member_token, PeerKind::Client, &bkey).await;

    for transport in [Transport::Upgrade, Transport::WebSocket] {
        let a = connect(&url, &akey, transport).await.unwrap();
        let b = connect(&url, &bkey, transport).await.unwrap();
        // b is registered once its handshake is done; a's send then reaches it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let got = loop {
            a.send(bkey.public(), b"hello through coderd".to_vec()).await.ok();
            match tokio::time::timeout(Duration::from_millis(200), b.recv()).await {
                Ok(Ok(p)) => break p,
                _ if tokio::time::Instant::now() < deadline => continue,
                other => panic!("no packet through the relay ({transport:?}): {other:?}"),
            }
        };
        assert_eq!(&got.data[..], b"hello through coderd");
        assert_eq!(b.is_websocket(), transport == Transport::WebSocket);
    }
}

#[tokio::test]
async fn the_embedded_relay_admits_only_announced_keys() {
    let srv = TestServer::start().await.unwrap();
    let url = relay_url(&srv);

    // A key nobody announced: refused after the handshake, never registered.
    let stranger = SecretKey::generate();
    assert_refused(connect(&url, &stranger, Transport::Upgrade).await);
    assert_refused(connect(&url, &stranger, Transport::WebSocket).await);
    assert!(srv.relay.server.peer_location(&stranger.public()).is_none());
    assert_eq!(srv.relay.server.stats().clients_refused, 2);

    // A key an authenticated agent announced: admitted.
    let (_, (_, member)) = users(&srv).await;
    let agent = seed_agent(&srv.db.pool, member).await;
    let key = SecretKey::generate();
    let coordination = announce(&srv.url, &agent.token, PeerKind::Agent, &key).await;
    let client = connect(&url, &key, Transport::Upgrade).await.expect("announced key refused");
    assert!(client.is_connected());
    drop(client);

    // Its peer gone, the key may open no new relay connection.
    drop(coordination);
    wait_known(&srv, &key, false).await;
    assert_refused(connect(&url, &key, Transport::Upgrade).await);
}

/// A second router on the same state (another "replica" for the purpose)
/// that answers `POST /api/v2/derp/verify-client` for holders of `key`.
async fn serve_with_verify_key(srv: &TestServer, key: &str) -> (Url, AbortOnDropHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let app = coordinator::app(srv.state.clone())
        .layer(axum::Extension(RelayVerifyKey::new(key).unwrap()));
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let _ = axum::serve(listener, service).await;
    });
    (url, AbortOnDropHandle::new(task))
}

#[tokio::test]
async fn derper_verifies_clients_with_coderd() {
    const SECRET: &str = "derper-and-coderd-share-this";
    let srv = TestServer::start().await.unwrap();
    let (coderd, _serving) = serve_with_verify_key(&srv, SECRET).await;
    let verify_url = coderd.join("/api/v2/derp/verify-client").unwrap();

    // The endpoint is no oracle: absent where no secret is configured,
    // 401 without the secret or with a wrong one.
    let http = reqwest::Client::new();
    let body = serde_json::json!({ "node_key": derp::server::node_key_text(&SecretKey::generate().public()) });
    let status = |r: reqwest::Response| r.status().as_u16();
    let unconfigured = srv.url.join("/api/v2/derp/verify-client").unwrap();
    let r = http.post(unconfigured).bearer_auth(SECRET).json(&body).send().await.unwrap();
    assert_eq!(status(r), 404);
    let r = http.post(verify_url.clone()).json(&body).send().await.unwrap();
    assert_eq!(status(r), 401);
    let r = http.post(verify_url.clone()).bearer_auth("not-the-secret-at-all").json(&body);
    assert_eq!(status(r.send().await.unwrap()), 401);
    let r = http.post(verify_url.clone()).bearer_auth(SECRET).body("{").send().await.unwrap();
    assert_eq!(status(r), 400);

    // A derper (the relay server, as `derper --verify-clients` configures it).
    let mut config = derp::ServerConfig::default();
    let verifier = UrlVerifier::new(verify_url, SECRET.to_owned()).unwrap();
    config.verify_clients = Some(ClientVerifier::new(verifier));
    let derper = derp::Server::spawn(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let derper_url = format!("http://{}/derp", listener.local_addr().unwrap());
    let serving = derper.clone();
    let _derper_task = AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = serving.serve(listener).await;
    }));

    assert_refused(connect(&derper_url, &SecretKey::generate(), Transport::Upgrade).await);

    let (_, (member_token, _)) = users(&srv).await;
    let key = SecretKey::generate();
    let _c = announce(&srv.url, &member_token, PeerKind::Client, &key).await;
    let client = connect(&derper_url, &key, Transport::Upgrade).await.expect("known key refused");
    assert!(client.is_connected());

    // A derper with the wrong secret admits no one (fails closed).
    let mut config = derp::ServerConfig::default();
    let wrong = UrlVerifier::new(
        coderd.join("/api/v2/derp/verify-client").unwrap(),
        "wrong-secret-wrong-secret".into(),
    );
    config.verify_clients = Some(ClientVerifier::new(wrong.unwrap()));
    let misconfigured = derp::Server::spawn(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad_url = format!("http://{}/derp", listener.local_addr().unwrap());
    let _bad_task = AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = misconfigured.serve(listener).await;
    }));
    assert_refused(connect(&bad_url, &key, Transport::Upgrade).await);
}

/// Mesh sessions announce their keys before they dial the relays, so an
/// agent and a client join through the verifying embedded relay and reach
/// each other over it.
#[tokio::test]
async fn mesh_sessions_join_through_the_verifying_relay() {
    use codersdk::meshnet::{MeshSession, SessionConfig};
    let srv = TestServer::start().await.unwrap();
    let map = srv.client().relay_map().await.unwrap();
    let (_, (member_token, member)) = users(&srv).await;
    let agent = seed_agent(&srv.db.pool, member).await;
    let config = || {
        let mut c = SessionConfig::default();
        c.relay_only = true;
        c.bind = Some("127.0.0.1:0".parse().unwrap());
        c
    };
    let join = |token: String, kind: PeerKind| {
        let (url, map) = (srv.url.clone(), map.clone());
        async move { MeshSession::join(&url, &token, kind, &map, config()).await }
    };
    let agent_session = tokio::time::timeout(DEADLINE, join(agent.token.clone(), PeerKind::Agent))
        .await
        .unwrap()
        .expect("the agent could not join through the verifying relay");
    let client_session = tokio::time::timeout(DEADLINE, join(member_token, PeerKind::Client))
        .await
        .unwrap()
        .expect("the client could not join through the verifying relay");
    let accept = tokio::spawn(async move {
        let conn = agent_session.endpoint().accept().await.unwrap();
        drop(conn);
        agent_session
    });
    let conn = client_session.dial_agent(agent.id, DEADLINE).await.expect("dial over the relay");
    drop(conn);
    tokio::time::timeout(DEADLINE, accept).await.unwrap().unwrap();
    assert_eq!(srv.relay.server.stats().clients_refused, 0);
}
