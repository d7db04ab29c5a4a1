//! Helpers shared by the coordination test binaries: seeded workspaces and
//! users, peers that join with a deterministic node, a second replica, and a
//! switchable TCP balancer.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codersdk::coordination::{Coordinator, PeerKind, PeerUpdate};
use codersdk::{CreateUserRequest, LoginWithPasswordRequest, Role};
use coordinator::testutil::TestServer;
use coordinator::{ApiConfig, AppState};
use mesh::Node;
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::AbortOnDropHandle;
use url::Url;
use uuid::Uuid;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub use coordinator::testutil::node;

/// Waits (up to [`DEADLINE`]) for the first update matching `want`.
pub async fn expect(
    updates: &mut codersdk::coordination::PeerUpdates,
    what: &str,
    mut want: impl FnMut(&PeerUpdate) -> bool,
) -> PeerUpdate {
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            let u = updates.recv().await.expect("update stream ended");
            if want(&u) {
                return u;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Connects and publishes the node for the assigned id.
pub async fn join(
    url: &Url,
    token: &str,
    kind: PeerKind,
    port: u16,
) -> (Coordinator, codersdk::coordination::PeerUpdates, Uuid, Node) {
    let (c, mut updates) = Coordinator::connect(url, token, kind).await.unwrap();
    let PeerUpdate::Connected { peer_id, node_id, .. } = updates.recv().await.unwrap() else {
        panic!("first update is not Connected");
    };
    let n = node(node_id, port);
    c.update_node(n.clone());
    (c, updates, peer_id, n)
}

pub fn is_node(peer: Uuid, n: &Node) -> impl FnMut(&PeerUpdate) -> bool + '_ {
    move |u| matches!(u, PeerUpdate::Node { peer: p, node } if *p == peer && node == n)
}

pub use coordinator::testutil::SeededAgent as Agent;

/// Inserts a workspace owned by `owner` whose latest build has one agent.
pub async fn seed_agent(db: &PgPool, owner: Uuid) -> Agent {
    coordinator::testutil::seed_agents(db, owner, 1).await.unwrap().remove(0)
}

/// The owner's token and id, and a member's.
pub async fn users(srv: &TestServer) -> ((String, Uuid), (String, Uuid)) {
    let owner = srv.owner().await.unwrap();
    let owner_id = owner.me().await.unwrap().id;
    let owner_token = owner.token().unwrap().to_owned();
    let member = owner
        .create_user(&CreateUserRequest {
            email: "member@example.com".into(),
            username: "member".into(),
            password: "member-password".into(),
            roles: vec![Role::Member],
        })
        .await
        .unwrap();
    ((owner_token, owner_id), (member_login(srv).await, member.id))
}

/// A fresh session token of the member `users` created.
pub async fn member_login(srv: &TestServer) -> String {
    let login = srv
        .client()
        .login_with_password(&LoginWithPasswordRequest {
            email: "member@example.com".into(),
            password: "member-password".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    login.session_token
}

/// A second coderd replica on the same database; dropping it kills it.
pub struct Replica {
    pub url: Url,
    _state: AppState,
    _task: AbortOnDropHandle<()>,
}

pub async fn replica(db: &PgPool) -> Replica {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let state = AppState::new(db.clone(), ApiConfig::new(url.clone()));
    let app = coordinator::app(state.clone());
    let task = tokio::spawn(async move {
        let _ =
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    Replica { url, _state: state, _task: AbortOnDropHandle::new(task) }
}

/// A TCP load balancer whose backend can be switched.
pub async fn balancer(backend: SocketAddr) -> (Url, Arc<Mutex<SocketAddr>>, AbortOnDropHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let target = Arc::new(Mutex::new(backend));
    let t = target.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = *t.lock().unwrap();
            conns.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (url, target, AbortOnDropHandle::new(task))
}

pub fn addr(url: &Url) -> SocketAddr {
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap()).parse().unwrap()
}
