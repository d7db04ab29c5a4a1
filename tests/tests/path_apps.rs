//! Path apps (`/@OWNER/WS/apps/SLUG|PORT/`) run on the dashboard's origin,
//! so by default only the workspace's owner may open them, and what the app
//! sends back is sandboxed (`Content-Security-Policy: sandbox …` without
//! `allow-same-origin`). A site owner opening a member's app, or a member
//! opening another member's `authenticated` app, is refused unless the
//! operator opted in (`--dangerous-allow-path-app-*`).
//!
//! Real parts: coderd's router in process on a real Postgres
//! (`coordinator::testutil`), a real `coder-agent` process joined to its
//! mesh, and an HTTP app on this host that the agent forwards to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codersdk::{Client, CreateUserRequest, LoginWithPasswordRequest, Role};
use coordinator::testutil::TestServer;
use coordinator::ApiConfig;
use reqwest::{header, StatusCode};
use uuid::Uuid;

/// An app whose page would, on the dashboard's origin, act as its visitor.
const PAGE: &str = "<script>fetch('/api/v2/users/me/keys/tokens', {method: 'POST'})</script>";

/// The app on this host: answers every request with [`PAGE`]; counts them.
fn app_server() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                PAGE.len()
            );
        }
    });
    (port, hits)
}

/// Kills the agent when the test ends, however it ends.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A deployment where member `alice` has a workspace with a real agent and
/// two apps on [`app_server`]: `private` (share `owner`) and `shared`
/// (share `authenticated`). `owner` is a site owner; `bob` another member.
struct Deployment {
    srv: TestServer,
    owner: String,
    alice: String,
    bob: String,
    workspace: String,
    /// `/@alice/WORKSPACE`
    prefix: String,
    app_port: u16,
    hits: Arc<AtomicUsize>,
    _agent: AgentProcess,
    _home: tempfile::TempDir,
}

async fn member(srv: &TestServer, owner: &Client, name: &str) -> (String, Uuid) {
    let email = format!("{name}@example.com");
    let user = owner
        .create_user(&CreateUserRequest {
            email: email.clone(),
            username: name.into(),
            password: "member-password".into(),
            roles: vec![Role::Member],
        })
        .await
        .unwrap();
    let login = srv
        .client()
        .login_with_password(&LoginWithPasswordRequest {
            email,
            password: "member-password".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    (login.session_token, user.id)
}

impl Deployment {
    async fn start(tweak: impl FnOnce(&mut ApiConfig)) -> Deployment {
        let srv = TestServer::start_with(tweak).await.unwrap();
        let owner = srv.owner().await.unwrap();
        let (alice, alice_id) = member(&srv, &owner, "alice").await;
        let (bob, _) = member(&srv, &owner, "bob").await;
        let db = &srv.db.pool;
        let agent = coordinator::testutil::seed_agents(db, alice_id, 1).await.unwrap().remove(0);
        let workspace: String = sqlx::query_scalar("SELECT name FROM workspaces WHERE id = $1")
            .bind(agent.workspace)
            .fetch_one(db)
            .await
            .unwrap();
        let (app_port, hits) = app_server();
        for (slug, share) in [("private", "owner"), ("shared", "authenticated")] {
            sqlx::query(
                "INSERT INTO workspace_apps (id, agent_id, slug, url, share) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(Uuid::new_v4())
            .bind(agent.id)
            .bind(slug)
            .bind(format!("http://127.0.0.1:{app_port}"))
            .bind(share)
            .execute(db)
            .await
            .unwrap();
        }
        let home = tests::tempdir().unwrap();
        let log = std::fs::File::create(home.path().join("agent.log")).unwrap();
        let child = Command::new(tests::binary("coder-agent").unwrap())
            .env("CODER_AGENT_URL", srv.url.as_str())
            .env("CODER_AGENT_TOKEN", &agent.token)
            .env("HOME", home.path())
            .current_dir(home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Deployment {
            owner: owner.token().unwrap().to_owned(),
            alice,
            bob,
            prefix: format!("/@alice/{workspace}"),
            workspace,
            app_port,
            hits,
            srv,
            _agent: AgentProcess(child),
            _home: home,
        };
        d.wait_until_alice_reaches_her_app().await;
        d
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(self.srv.url.join(&format!("{}{path}", self.prefix)).unwrap())
            .header("Coder-Session-Token", token)
            .send()
            .await
            .unwrap()
    }

    /// A client that finds app `hosts` at coderd and follows no redirect.
    fn app_client(&self, hosts: &[&str]) -> reqwest::Client {
        let addr = std::net::SocketAddr::new([127, 0, 0, 1].into(), self.srv.url.port().unwrap());
        hosts
            .iter()
            .fold(reqwest::Client::builder(), |b, h| b.resolve(h, addr))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// Walks the subdomain auth flow for app `host` as the user of dashboard
    /// session `session`: the app origin's key.
    async fn app_key(&self, http: &reqwest::Client, host: &str, session: &str) -> String {
        let port = self.srv.url.port().unwrap();
        let r = http.get(format!("http://{host}:{port}/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{host}");
        let auth = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
        let r = http
            .get(auth)
            .header(header::COOKIE, format!("coder_session_token={session}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{host}");
        let back = url::Url::parse(r.headers()[header::LOCATION].to_str().unwrap()).unwrap();
        back.query_pairs().find(|(k, _)| k == "coder_app_token").unwrap().1.into_owned()
    }

    /// The agent joins the mesh a moment after it starts: until then the
    /// proxy answers 502. Deadline 60 s.
    async fn wait_until_alice_reaches_her_app(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get("/apps/private/", &self.alice).await;
            if r.status() == StatusCode::OK {
                return;
            }
            let status = r.status();
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self._home.path().join("agent.log"));
                panic!(
                    "alice never reached her app: {status} {}\nagent log: {log:?}",
                    r.text().await.unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The refusal: 403, saying why and what the operator can do.
async fn assert_refused(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("dashboard's origin"), "{what}: {body}");
    assert!(
        body["detail"].as_str().unwrap().contains("--dangerous-allow-path-app-"),
        "{what}: {body}"
    );
}

fn assert_sandboxed(r: &reqwest::Response, what: &str) {
    let csp: Vec<&str> = r
        .headers()
        .get_all(header::CONTENT_SECURITY_POLICY)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(csp.len(), 1, "{what}: {csp:?}");
    let directives: Vec<&str> = csp[0].split_whitespace().collect();
    assert_eq!(directives.first(), Some(&"sandbox"), "{what}: {csp:?}");
    assert!(directives.contains(&"allow-scripts"), "{what}: {csp:?}");
    assert!(!directives.contains(&"allow-same-origin"), "{what}: {csp:?}");
}

#[tokio::test]
async fn path_apps_open_for_their_owner_only_and_sandboxed_by_default() {
    let d = Deployment::start(|c| c.wildcard = coordinator::Wildcard::parse("*.apps.test")).await;
    let port = format!("/apps/{}/", d.app_port);

    // The owner's own visits work, sandboxed.
    for path in ["/apps/private/", "/apps/shared/", port.as_str()] {
        let r = d.get(path, &d.alice).await;
        assert_eq!(r.status(), StatusCode::OK, "alice {path}");
        assert_sandboxed(&r, path);
        assert_eq!(r.text().await.unwrap(), PAGE);
    }
    let served = d.hits.load(Ordering::SeqCst);

    // A site owner opening a member's app or dev URL is refused.
    for path in ["/apps/private/", "/apps/shared/", port.as_str()] {
        assert_refused(d.get(path, &d.owner).await, &format!("owner {path}")).await;
    }
    // So is another member opening an `authenticated` app; a private one
    // stays invisible to them.
    assert_refused(d.get("/apps/shared/", &d.bob).await, "bob shared").await;
    assert_eq!(d.get("/apps/private/", &d.bob).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(d.get(&port, &d.bob).await.status(), StatusCode::NOT_FOUND);
    // The same with the dashboard's cookie, as a browser asks.
    let r = reqwest::Client::new()
        .get(d.srv.url.join(&format!("{}/apps/shared/", d.prefix)).unwrap())
        .header(header::COOKIE, format!("coder_session_token={}", d.owner))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_refused(r, "owner's browser").await;
    assert_eq!(d.hits.load(Ordering::SeqCst), served, "a refused request reached the app");

    // The app's own WebSocket with the cookie must come from this origin.
    let ws = |origin: &'static str| {
        reqwest::Client::new()
            .get(d.srv.url.join(&format!("{}/apps/private/ws", d.prefix)).unwrap())
            .header(header::COOKIE, format!("coder_session_token={}", d.alice))
            .header(header::ORIGIN, origin)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .send()
    };
    assert_eq!(ws("https://evil.example").await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(d.hits.load(Ordering::SeqCst), served, "a cross-site upgrade reached the app");

    // Subdomain apps, the way to share: on an origin of their own, bob opens
    // alice's shared app, unsandboxed; a private one stays hidden.
    let shared = format!("shared--main--{}--alice.apps.test", d.workspace);
    let private = format!("private--main--{}--alice.apps.test", d.workspace);
    let app_port = d.srv.url.port().unwrap();
    let http = d.app_client(&[&shared, &private]);
    let key = d.app_key(&http, &shared, &d.bob).await;
    let visit = |host: &str, key: &str, origin: Option<String>| {
        let mut r = http
            .get(format!("http://{host}:{app_port}/"))
            .header(header::COOKIE, format!("coder_app_session={key}"));
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o).header(header::UPGRADE, "websocket");
        }
        r.send()
    };
    let r = visit(&shared, &key, None).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get(header::CONTENT_SECURITY_POLICY).is_none());
    let bobs_private = d.app_key(&http, &private, &d.bob).await;
    assert_eq!(visit(&private, &bobs_private, None).await.unwrap().status(), StatusCode::NOT_FOUND);
    // Its WebSockets come from its own origin, not from another app host
    // (the same site, so the cookie would ride along).
    let served = d.hits.load(Ordering::SeqCst);
    let own = Some(format!("http://{shared}:{app_port}"));
    let sibling = Some(format!("http://{private}:{app_port}"));
    assert_eq!(visit(&shared, &key, sibling).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(d.hits.load(Ordering::SeqCst), served, "a cross-origin upgrade reached the app");
    let r = visit(&shared, &key, own).await.unwrap();
    let status = r.status();
    assert_eq!(status, StatusCode::OK, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn path_app_opt_ins_open_what_they_name() {
    let d = Deployment::start(|c| {
        c.path_apps.allow_sharing = true;
        c.path_apps.allow_site_owner_access = true;
        c.path_apps.disable_csp_sandbox = true;
    })
    .await;
    // --dangerous-allow-path-app-site-owner-access: a site owner opens a
    // member's private app and dev URL.
    for path in ["/apps/private/".to_owned(), format!("/apps/{}/", d.app_port)] {
        let r = d.get(&path, &d.owner).await;
        assert_eq!(r.status(), StatusCode::OK, "owner {path}");
        assert!(r.headers().get(header::CONTENT_SECURITY_POLICY).is_none(), "sandbox disabled");
    }
    // --dangerous-allow-path-app-sharing: another member opens a shared app,
    // but still not a private one.
    assert_eq!(d.get("/apps/shared/", &d.bob).await.status(), StatusCode::OK);
    assert_eq!(d.get("/apps/private/", &d.bob).await.status(), StatusCode::NOT_FOUND);
}
